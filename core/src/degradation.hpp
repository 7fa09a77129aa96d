// A simpler form an instance runs in on this kernel (plugin API 2.2's
// degrade()): what kernel_requirements() says, what the state record keeps
// and what validate, status and metrics show, in one JSON shape.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bpfmgr {

struct Degradation {
  std::string what;
  std::string because;
};

// [{"what": ..., "because": ...}]
inline nlohmann::json degraded_json(const std::vector<Degradation>& degraded) {
  auto out = nlohmann::json::array();
  for (auto& d : degraded) out.push_back({{"what", d.what}, {"because", d.because}});
  return out;
}

inline std::vector<Degradation> degraded_from_json(const nlohmann::json& j) {
  std::vector<Degradation> out;
  if (!j.is_array()) return out;
  for (auto& d : j)
    if (d.is_object()) out.push_back({d.value("what", ""), d.value("because", "")});
  return out;
}

}  // namespace bpfmgr
