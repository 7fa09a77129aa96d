// One probe of the running kernel (DESIGN.md, "kernel features"): what the
// plugin API's bpfmgr_feature_kind names, answered lazily and cached for the
// life of the process. Sources:
//  - program, map and helper support: libbpf's probe API (a tiny program or
//    map is loaded and freed; needs the privileges load needs);
//  - kfuncs, types, struct/union members and enumerators: the kernel's BTF
//    (/sys/kernel/btf/vmlinux, mmapped where the kernel allows it; module
//    BTF too for kfuncs), read once, on the first question that needs it;
//  - tracepoints: tracefs (mounted the way load mounts it);
//  - link types: enum bpf_link_type in the kernel's BTF.
// Nothing here is asked unless a plugin asks: a manifest whose plugins
// declare nothing pays nothing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <bpfmgr/plugin.hpp>

#include "degradation.hpp"

namespace bpfmgr {

class KernelFeatures {
 public:
  // The running kernel, probed once per process.
  static KernelFeatures& running();

  KernelFeatures();
  ~KernelFeatures();
  KernelFeatures(const KernelFeatures&) = delete;
  KernelFeatures& operator=(const KernelFeatures&) = delete;

  // Whether the kernel has `name` of `kind` (a bpfmgr_feature_kind); false
  // for a kind this core does not know, and for a malformed name.
  bool has(std::uint32_t kind, const std::string& name);
  bool has(Feature kind, const std::string& name);
  // uname -r.
  const std::string& release() const { return release_; }
  // Whether this process may load BPF objects, which the probes of program
  // and map types and helpers do: without, those read as absent and say
  // nothing about the kernel (probe_denied()).
  bool can_probe();
  static bool needs_bpf(std::uint32_t kind) {
    return kind == BPFMGR_FEATURE_PROG_TYPE || kind == BPFMGR_FEATURE_MAP_TYPE ||
           kind == BPFMGR_FEATURE_HELPER;
  }

  // How much the probe cost so far (wall time in the probing calls, and how
  // many answers were computed rather than cached): for logs and benchmarks.
  double probe_seconds() const { return probe_seconds_; }
  std::size_t answers_computed() const { return cache_.size(); }

 private:
  struct Btf;
  bool compute(std::uint32_t kind, const std::string& name);
  bool prog_type(const std::string& name);
  bool map_type(const std::string& name);
  bool helper(const std::string& spec);
  static bool helper_refused_by_verifier(int prog_type, long long func_id);
  bool kfunc(const std::string& name);
  bool type_exists(const std::string& name);
  bool field_exists(const std::string& spec);
  bool enum_value(const std::string& name);
  bool tracepoint(const std::string& spec);
  bool link_type(const std::string& name);
  // The enumerator's value in the kernel's enum `enum_name`, if it has it.
  std::optional<std::int64_t> enumerator(const std::string& enum_name,
                                         const std::string& value_name);
  Btf* vmlinux();
  const std::vector<std::unique_ptr<Btf>>& modules();

  std::recursive_mutex mu_;  // helper() asks has() for its program type
  std::string release_;
  std::map<std::pair<std::uint32_t, std::string>, bool> cache_;
  std::unique_ptr<Btf> vmlinux_;
  bool vmlinux_tried_ = false;
  std::vector<std::unique_ptr<Btf>> modules_;
  bool modules_tried_ = false;
  int can_probe_ = -1;   // unknown until asked
  std::string tracefs_;  // events directory; "" until found
  bool tracefs_tried_ = false;
  double probe_seconds_ = 0;
};

// One need a plugin's kernel_requirements() declared for an instance.
struct KernelNeed {
  std::uint32_t kind = 0;  // bpfmgr_feature_kind
  std::string name;
  std::string key;    // the option asking for it; "" for the plugin itself
  std::string since;  // first Linux release that has it; may be ""
  std::string hint;   // what to change instead; may be ""
  bool met = false;   // the running kernel has it
};

// What kernel_requirements() said for one instance's options.
struct KernelRequirements {
  bool declared = false;  // the plugin has kernel_requirements (API 2.2)
  std::vector<KernelNeed> needs;
  std::vector<Degradation> degraded;
  bool usable() const {
    for (auto& n : needs)
      if (!n.met) return false;
    return true;
  }
};

// The C face of KernelFeatures handed to plugins (bpfmgr_kernel). With
// `collect`, require() and degrade() record into it (kernel_requirements);
// without, they are refused: the call is ignored and misuse() says so, for
// the core to fail the hook that made it.
class KernelBridge {
 public:
  KernelBridge(KernelFeatures& features, KernelRequirements* collect);
  KernelBridge(const KernelBridge&) = delete;
  KernelBridge& operator=(const KernelBridge&) = delete;
  bpfmgr_kernel* get() { return &c_.k; }
  const std::string& misuse() const { return misuse_; }
  void clear_misuse() { misuse_.clear(); }

 private:
  struct C {
    bpfmgr_kernel k;
    KernelBridge* self;
  };
  static KernelBridge& of(const bpfmgr_kernel* k);
  static const bpfmgr_kernel_ops kOps;
  C c_;
  KernelFeatures& features_;
  KernelRequirements* collect_;
  std::string misuse_;
};

// The kind's name in JSON ("prog_type", "helper", ...), or "kind N".
std::string feature_kind_name(std::uint32_t kind);
// How a need reads in a message: "program type sk_msg", "helper
// bpf_get_netns_cookie in sock_ops programs", "kernel field struct
// tcp_sock.snd_una", "sock_ops callback BPF_SOCK_OPS_HDR_OPT_LEN_CB", ...
std::string describe_feature(std::uint32_t kind, const std::string& name);
bool known_feature_kind(std::uint32_t kind);

}  // namespace bpfmgr
