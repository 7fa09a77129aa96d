// `bpfmgr serve MANIFEST`: keeps the kernel matching a manifest, unattended.
//
// At start it applies the manifest with the same all-or-nothing load as
// `bpfmgr load` (unchanged instances are adopted, not reloaded). Then it
// reconciles when the manifest file changes, on SIGHUP and every interval:
// the managed instances are observed the way `bpfmgr status` observes them,
// and a manifest change or any drift (pins removed, a reboot, a link whose
// cgroup went away, a crashed load's staging) is repaired by another normal
// load. An invalid manifest is reported and the running state kept.
// SIGTERM/SIGINT finish the step in progress and exit 0; pins stay unless
// --unpin-on-exit. Prometheus metrics are served on /metrics, health on
// /healthz (read-only, loopback by default). Under systemd it reports
// readiness after the first apply (Type=notify).
#pragma once

#include <map>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace bpfmgr {

struct ServeArgs {
  std::string manifest;
  std::string pin_root_override;
  std::string metrics_address = "127.0.0.1:9464";  // "none": no endpoint
  double interval_s = 30;
  bool unpin_on_exit = false;
  bool enable_bpf_stats = false;
};
int cmd_serve(const ServeArgs& args);

// --interval's bounds: below a second the loop would spin on status
// observations; past a day a lost pin would wait too long for the
// safety-net pass (drift is normally seen at once through inotify).
inline constexpr double kMinIntervalSeconds = 1;
inline constexpr double kMaxIntervalSeconds = 86400;
// Why `seconds` is not a valid --interval (NaN, infinite, out of bounds).
std::optional<std::string> interval_problem(double seconds);

// "HOST:PORT" or "[IPV6]:PORT" split; throws bpfmgr::Error when malformed.
std::pair<std::string, int> parse_listen_address(const std::string& address);

// Why each managed instance differs from what the manifest wants, from the
// same observation `bpfmgr status` makes: instance -> reasons (values of
// repair_reasons()). Instances that match are absent.
std::map<std::string, std::vector<std::string>> find_drift(
    const std::string& pin_root, const std::vector<std::string>& instances);

// What the `bpfmgr serve` running on `pin_root` recorded about its state
// (ready, or degraded: the instances it could not apply and why), for
// `bpfmgr status`: null when no serve holds the pin root's serve lock. Only
// `instances`' problems when that is not empty.
nlohmann::json serve_state_for_status(const std::string& pin_root,
                                      const std::vector<std::string>& instances);

}  // namespace bpfmgr
