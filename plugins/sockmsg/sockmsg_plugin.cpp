// sockmsg plugin: sk_msg verdict on the sockops instance's sockhash that
// hands every sendmsg() to the peer socket (see docs/sockops.md).
#include <bpfmgr/plugin.hpp>

#include <cstring>
#include <string>

#include "bypass_common.h"
#include "bypass_kernel.hpp"
#include "sockmsg.skel.h"

static_assert(sizeof(sockmsg_counters) == 16 * 8, "sockmsg_counters layout changed");
static_assert(sizeof(sockmsg_ctl) == 8, "sockmsg_ctl layout changed");
static_assert(sizeof(bypass_sock_info) == 32, "bypass_sock_info layout changed");

namespace {

using bpfmgr::Error;

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// The verdict finds a peer's queue through sockops' sock_index; a private
// copy (the manifest did not share it) is always empty. Shared means: the
// same instance owns sock_index and sock_hash.
bool index_shared(const bpfmgr::ContextBase& ctx) {
  return dir_of(ctx.map_pin_path("sock_index")) == dir_of(ctx.map_pin_path("sock_hash"));
}

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

  // No kfunc, no untrusted pointer handed to a helper: the peer's queue is
  // read with bpf_probe_read_kernel through sock_index (docs/sockops.md,
  // "What each program relies on").
  void kernel_requirements(const bpfmgr::Options&, bpfmgr::KernelNeeds& k) const override {
    using F = bpfmgr::Feature;
    auto needs = bypass::common_needs("sk_msg");
    needs.push_back({F::Helper, "sk_msg:bpf_msg_redirect_hash", "", "", ""});
    needs.push_back({F::Helper, "sk_msg:bpf_probe_read_kernel", "", "", ""});
    bypass::declare(k, needs);
  }

  void before_load(bpfmgr::InstanceContext& ctx) override {
    ctx.set_global("cfg_have_index", std::uint32_t{index_shared(ctx) ? 1u : 0u});
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
             std::pair{"samples_accel", &sockmsg_counters::samples_accel},
             std::pair{"passed_no_index", &sockmsg_counters::passed_no_index},
             std::pair{"sent_after_half_close", &sockmsg_counters::sent_after_half_close}})
      r.counters.push_back(bpfmgr::percpu_counter(name, v, field));
    std::uint32_t zero = 0;
    sockmsg_ctl ctl{};
    if (bpf_map_lookup_elem(ctx.map_fd("sockmsg_ctl"), &zero, &ctl) == 0)
      r.details.push_back({"mode", ctl.draining ? "draining (TCP path)" : "redirecting"});
    if (!index_shared(ctx))
      r.details.push_back({"peer index",
                           "not shared: every message takes the TCP path; add "
                           "sock_index = \"<sockops instance>\" under [instance.maps]"});
    return r;
  }
};

}  // namespace

BPFMGR_PLUGIN(SockmsgPlugin)
