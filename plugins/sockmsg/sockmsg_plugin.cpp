// sockmsg plugin: sk_msg verdict on the sockops instance's sockhash that
// hands every sendmsg() to the peer socket (see docs/sockops.md).
#include <bpfmgr/plugin.hpp>

#include <cstring>
#include <string>

#include "bypass_common.h"
#include "sockmsg.skel.h"

static_assert(sizeof(sockmsg_counters) == 16 * 8, "sockmsg_counters layout changed");
static_assert(sizeof(sockmsg_ctl) == 8, "sockmsg_ctl layout changed");

namespace {

using bpfmgr::Error;

class SockmsgPlugin final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"sockmsg", "0.1.0",
            "sk_msg verdict redirecting each message to the peer socket of a "
            "sockops sockhash (share its sock_hash through [instance.maps])"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t sz = 0;
    const void* p = sockmsg_bpf__elf_bytes(&sz);
    return {static_cast<const std::byte*>(p), sz};
  }

  void attach(bpfmgr::InstanceContext& ctx) override {
    ctx.attach_map("bypass_sk_msg", "sock_hash", BPF_SK_MSG_VERDICT);
  }

  // Sockets already in the sockhash keep the verdict program (and through
  // it the map) alive after unpin, until they close. Switching them to the
  // TCP path first means nothing new is queued on an ingress list whose
  // psock could later go away; what is queued stays readable.
  void before_unpin(bpfmgr::PinnedContext& ctx) override {
    sockmsg_ctl ctl{1, 0};
    std::uint32_t zero = 0;
    if (bpf_map_update_elem(ctx.map_fd("sockmsg_ctl"), &zero, &ctl, BPF_ANY) != 0)
      throw Error(std::string("setting sockmsg_ctl.draining: ") + std::strerror(errno));
  }

  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    auto v = bpfmgr::read_percpu<sockmsg_counters>(ctx.map_fd("sockmsg_counters"));
    for (auto [name, field] : {
             std::pair{"redirected_msgs", &sockmsg_counters::redirected_msgs},
             std::pair{"redirected_bytes", &sockmsg_counters::redirected_bytes},
             std::pair{"passed_msgs", &sockmsg_counters::passed_msgs},
             std::pair{"passed_bytes", &sockmsg_counters::passed_bytes},
             std::pair{"redirect_failed", &sockmsg_counters::redirect_failed},
             std::pair{"passed_draining", &sockmsg_counters::passed_draining},
             std::pair{"passed_sticky", &sockmsg_counters::passed_sticky},
             std::pair{"queue_bound", &sockmsg_counters::queue_bound},
             std::pair{"queue_resumed", &sockmsg_counters::queue_resumed},
             std::pair{"passed_overflow", &sockmsg_counters::passed_overflow},
             std::pair{"samples_accel", &sockmsg_counters::samples_accel}})
      r.counters.push_back(bpfmgr::percpu_counter(name, v, field));
    std::uint32_t zero = 0;
    sockmsg_ctl ctl{};
    if (bpf_map_lookup_elem(ctx.map_fd("sockmsg_ctl"), &zero, &ctl) == 0)
      r.details.push_back({"mode", ctl.draining ? "draining (TCP path)" : "redirecting"});
    return r;
  }
};

}  // namespace

BPFMGR_PLUGIN(SockmsgPlugin)
