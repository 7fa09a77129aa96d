#pragma once
// systemd's readiness protocol (sd_notify(3)), written out: one datagram to
// $NOTIFY_SOCKET. It saves linking libsystemd and the seven libraries it
// pulls into every bpfmgr process for three calls in `serve`.
#include <string_view>

namespace bpfmgr {

// Sends `state` ("READY=1\nSTATUS=...") to the service manager, if one asked
// for it; returns false when it could not be sent (nothing asked is true).
bool notify_service_manager(std::string_view state);

}  // namespace bpfmgr
