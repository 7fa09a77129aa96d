#include "record_json.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>

#include <fmt/format.h>

namespace bpfmgr {

nlohmann::json option_value_json(const OptionValue& v) {
  nlohmann::json j;
  std::visit([&](auto& x) { j = x; }, v);
  return j;
}

nlohmann::json options_to_json(const Options& options) {
  nlohmann::json j = nlohmann::json::object();
  for (auto& [name, v] : options.all()) j[name] = option_value_json(v);
  return j;
}

Options options_from_json(const nlohmann::json& j,
                          const std::vector<OptionSpec>& schema) {
  std::map<std::string, OptionValue> values;
  for (auto& item : j.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    auto spec = std::find_if(schema.begin(), schema.end(),
                             [&](auto& s) { return s.name == k; });
    if (spec != schema.end()) {
      try {
        switch (spec->type) {
          case OptionType::Bool: values[k] = v.get<bool>(); continue;
          case OptionType::Int: values[k] = v.get<std::int64_t>(); continue;
          case OptionType::String: values[k] = v.get<std::string>(); continue;
          case OptionType::StringList:
            values[k] = v.get<std::vector<std::string>>();
            continue;
          case OptionType::IntList:
            values[k] = v.get<std::vector<std::int64_t>>();
            continue;
        }
      } catch (const nlohmann::json::exception&) {
        // The plugin's schema changed since the load: fall back to guessing.
      }
    }
    if (v.is_boolean())
      values[k] = v.get<bool>();
    else if (v.is_number_integer())
      values[k] = v.get<std::int64_t>();
    else if (v.is_string())
      values[k] = v.get<std::string>();
    else if (v.is_array() && !v.empty() && v[0].is_number_integer())
      values[k] = v.get<std::vector<std::int64_t>>();
    else if (v.is_array() && !v.empty())
      values[k] = v.get<std::vector<std::string>>();
    else if (v.is_array())
      values[k] = std::vector<std::string>{};
  }
  return Options(std::move(values));
}

std::string utc_now_text() {
  // Calendar arithmetic, not gmtime_r or strftime: their first call runs
  // tzset(), which reads /etc/localtime (seven system calls) for a time
  // zone this text does not use.
  using namespace std::chrono;
  auto now = floor<seconds>(system_clock::now());
  auto day = floor<days>(now);
  year_month_day date{day};
  hh_mm_ss time{now - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", int(date.year()),
                     unsigned(date.month()), unsigned(date.day()), time.hours().count(),
                     time.minutes().count(), time.seconds().count());
}

}  // namespace bpfmgr
