// The JSON of what an instance's state record keeps and `--json` prints:
// its options (typed by the plugin's schema when read back); the simpler
// forms it runs on this kernel are degradation.hpp's.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernel_features.hpp"
#include "plugins.hpp"

namespace bpfmgr {

// One option value: true, 3, "a", ["a", "b"].
nlohmann::json option_value_json(const OptionValue& v);
nlohmann::json options_to_json(const Options& options);
// Types come from `schema` where it names the key (an empty array has no
// type of its own); keys it does not know are guessed from the JSON.
Options options_from_json(const nlohmann::json& j,
                          const std::vector<OptionSpec>& schema = {});
// Now, as records write times: "2026-12-04T22:30:31Z".
std::string utc_now_text();

}  // namespace bpfmgr
