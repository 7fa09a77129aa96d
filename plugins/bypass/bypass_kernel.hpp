// What sockops and sockmsg need from the kernel, per option value, in one
// list each: kernel_requirements() declares it (plugin API 2.2), and the
// docs' table (docs/sockops.md, "Kernel requirements") says the same.
#pragma once

#include <bpfmgr/plugin.hpp>

#include <string>
#include <vector>

namespace bypass {

struct KernelNeed {
  bpfmgr::Feature kind;
  std::string name;
  std::string option;  // the manifest key that asks for it ("": the plugin)
  std::string since;   // first Linux release that has it ("": long before 6.1)
  std::string hint;
};

inline void declare(bpfmgr::KernelNeeds& k, const std::vector<KernelNeed>& needs) {
  for (const auto& n : needs) k.require(n.kind, n.name, n.option, n.since, n.hint);
}

// What both programs need whatever the options.
inline std::vector<KernelNeed> common_needs(const std::string& prog_type) {
  using F = bpfmgr::Feature;
  const std::string p = prog_type + ":";
  return {
      {F::ProgType, prog_type, "", "", ""},
      {F::MapType, "sockhash", "", "4.18", ""},
      {F::MapType, "sk_storage", "", "5.2", ""},
      {F::MapType, "hash", "", "", ""},
      {F::MapType, "lru_hash", "", "", ""},
      // The netns cookie keeps equal 4-tuples of two namespaces apart; no
      // form without it is safe (5.10 has neither context's helper).
      {F::Helper, p + "bpf_get_netns_cookie", "", "5.15",
       "no same-host bypass on this kernel (without the netns cookie two "
       "namespaces' sockets could be paired)"},
      {F::Helper, p + "bpf_sk_storage_get", "", "", ""},
      {F::Helper, p + "bpf_skc_to_tcp_sock", "", "5.9", ""},
      {F::BtfType, "struct tcp_sock", "", "", ""},
  };
}

}  // namespace bypass
