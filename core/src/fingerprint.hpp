// A cheap, stable fingerprint of bytes (config hashes, lock file names); not
// a cryptographic hash (plugin files are checked with SHA-256, plugin_trust).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace bpfmgr {

// 64-bit FNV-1a of `data` as 16 hex digits.
inline std::string fnv1a_hex(std::string_view data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace bpfmgr
