// tcpint options: schema, semantic checks and the settings derived from
// them (shared by the plugin, its tests and its benchmark).
#pragma once

#include <bpfmgr/plugin.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tcpint.h"

namespace tcpint {

std::vector<bpfmgr::OptionSpec> option_schema();
std::vector<bpfmgr::OptionProblem> validate(const bpfmgr::Options& o);

struct Settings {
  std::string cgroup_path;        // absolute
  std::uint64_t cgroup_id = 0;    // inode of cgroup_path
  std::uint32_t cgroup_level = 0; // depth below the cgroup2 root
  std::uint8_t kind = TCPINT_DEFAULT_KIND;
  std::uint16_t exid = TCPINT_DEFAULT_EXID;
  std::uint16_t sender_id = 0;
  std::uint8_t segments = 0;      // TCPINT_SEG_* mask
  std::vector<std::uint16_t> ports;
  std::vector<tcpint_cidr_key> cidrs;
  bool syscall_hooks = true;
  bool propagate = true;
  std::uint32_t max_flows = 16384;
  bool force_fallbacks = false;   // `fallbacks = "always"`
};

// Throws bpfmgr::Error on what validate() would report. With
// resolve_cgroup false the cgroup is neither resolved nor stat()ed.
Settings settings_from(const bpfmgr::Options& o, const std::string& cgroup2_root,
                       const std::string& instance_name,
                       bool resolve_cgroup = true);

// "10.0.0.0/8", "fd00::/8", "192.0.2.1" -> LPM key (IPv4 v4-mapped, +96).
// Returns false with a reason when the text is not a CIDR.
bool parse_cidr(const std::string& text, tcpint_cidr_key& key,
                std::string& why);

// Default sender id when the option is 0: FNV-1a of hostname + instance,
// folded to 16 bits, never 0.
std::uint16_t auto_sender_id(const std::string& instance_name);

}  // namespace tcpint
