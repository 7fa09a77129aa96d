// `bpfmgr plugins`: every plugin found on the search path, its options
// (defaults, ranges, choices) and whether it can run on this kernel, with its
// defaults and with each value of each option that has a fixed set.
#include <cstdio>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "kernel_features.hpp"
#include "object_spec.hpp"
#include "plugin_trust.hpp"
#include "plugins.hpp"
#include "record_json.hpp"
#include "resolve.hpp"

namespace bpfmgr {

namespace {

// What kernel_requirements() says for `options` on this kernel: usable, the
// needs it lacks (worded as validate words them) and the simpler forms.
nlohmann::json kernel_answer(const LoadedPlugin& plugin, const Options& options,
                             const std::optional<ObjectSpec>& object) {
  nlohmann::json out;
  try {
    auto req = kernel_requirements_of(plugin, options, object ? &*object : nullptr,
                                      KernelFeatures::running());
    auto& unmet = out["unmet"] = nlohmann::json::array();
    for (auto& n : req.needs) {
      if (n.met) continue;
      unmet.push_back({{"kind", feature_kind_name(n.kind)}, {"name", n.name},
                       {"feature", describe_feature(n.kind, n.name)}, {"key", n.key},
                       {"since", n.since}, {"hint", n.hint},
                       // Without privileges the probe could not tell.
                       {"unchecked", KernelFeatures::needs_bpf(n.kind) &&
                                         !KernelFeatures::running().can_probe()}});
    }
    out["usable"] = unmet.empty();
    out["needs"] = req.needs.size();
    out["degraded"] = degraded_json(req.degraded);
  } catch (const std::exception& e) {
    out["usable"] = false;
    out["error"] = e.what();
  }
  return out;
}

// "needs kfunc x (Linux 6.2+); hint: ..." for each unmet need, or the error.
std::string why_not(const nlohmann::json& answer) {
  if (answer.contains("error")) return answer["error"].get<std::string>();
  std::string out;
  for (auto& n : answer["unmet"]) {
    out += (out.empty() ? "" : "; ") + std::string("needs ") + n["feature"].get<std::string>();
    if (n.value("unchecked", false)) out += " (only root can check)";
    if (!n["since"].get<std::string>().empty())
      out += " (Linux " + n["since"].get<std::string>() + "+)";
    if (!n["hint"].get<std::string>().empty()) out += " [" + n["hint"].get<std::string>() + "]";
  }
  return out;
}

std::string verdict(const nlohmann::json& answer) {
  if (!answer["usable"].get<bool>()) return "NOT usable: " + why_not(answer);
  std::string out = "usable";
  if (answer.value("needs", 0) == 0 && answer["degraded"].empty())
    return out + " (declares no kernel needs)";
  for (auto& d : answer.value("degraded", nlohmann::json::array()))
    out += "; runs " + d["what"].get<std::string>() + " (" + d["because"].get<std::string>() +
           ")";
  return out;
}

// The plugin on this kernel: with its defaults, and with each value of each
// option that has a fixed set (choices, booleans), the others at default.
nlohmann::json kernel_usability(const LoadedPlugin& plugin,
                                const std::vector<OptionSpec>& schema) {
  nlohmann::json k{{"release", KernelFeatures::running().release()}};
  const auto& api = plugin.plugin->api();
  k["declared"] = BPFMGR_HAS_FIELD(&api, bpfmgr_plugin_api, kernel_requirements) &&
                  api.kernel_requirements;
  std::map<std::string, OptionValue> defaults;
  std::vector<std::string> required;
  for (auto& o : schema) {
    if (o.default_value)
      defaults[o.name] = *o.default_value;
    else
      required.push_back(o.name);
  }
  if (!required.empty()) {
    // Without a value for these, no instance (and no default) exists.
    k["needs_options"] = required;
    return k;
  }
  auto object = plugin_object_spec(plugin);
  k["defaults"] = kernel_answer(plugin, Options(defaults), object);
  auto& per_option = k["options"] = nlohmann::json::object();
  for (auto& o : schema) {
    std::vector<OptionValue> values;
    if (o.type == OptionType::Bool) values = {false, true};
    for (auto& c : o.choices) {
      if (o.type == OptionType::String) values.emplace_back(c);
      if (o.type == OptionType::StringList) values.emplace_back(std::vector<std::string>{c});
    }
    if (values.empty()) continue;
    auto& list = per_option[o.name] = nlohmann::json::array();
    for (auto& v : values) {
      auto with = defaults;
      with[o.name] = v;
      auto answer = kernel_answer(plugin, Options(with), object);
      answer["value"] = option_value_json(v);
      list.push_back(std::move(answer));
    }
  }
  return k;
}

// "integer, default 64, 1..65536, one of a|b".
std::string option_summary(const nlohmann::json& o) {
  std::string out = o["type"].get<std::string>();
  if (o.contains("default")) out += ", default " + o["default"].dump();
  else out += ", required";
  if (o.contains("min") || o.contains("max"))
    out += ", " + (o.contains("min") ? o["min"].dump() : std::string("")) + ".." +
           (o.contains("max") ? o["max"].dump() : std::string(""));
  if (!o["choices"].empty()) {
    std::string c;
    for (auto& x : o["choices"]) c += (c.empty() ? "" : "|") + x.get<std::string>();
    out += ", one of " + c;
  }
  return out;
}

}  // namespace
int cmd_plugins(const std::vector<std::string>& extra_dirs, bool json) {
  PluginRegistry registry(extra_dirs);
  auto arr = nlohmann::json::array();
  int rc = kExitOk;
  for (auto& [name, path] : registry.discover()) {
    nlohmann::json p{{"name", name}, {"path", path}};
    try {
      auto lp = registry.load_file(path);
      p["version"] = lp->info.version;
      p["api_version"] = to_string(lp->api);
      p["description"] = lp->info.description;
      auto harness = find_bench_harness(lp->info.name);
      p["has_bench"] = !harness.empty();
      if (!harness.empty()) p["bench"] = harness;
      p["streams_events"] = lp->plugin->events_map().has_value();
      auto schema = lp->plugin->option_schema();
      auto& opts = p["options"] = nlohmann::json::array();
      for (auto& o : schema) {
        nlohmann::json oj{{"name", o.name}, {"type", option_type_name(o.type)},
                          {"description", o.description}, {"choices", o.choices}};
        if (o.default_value) oj["default"] = option_value_json(*o.default_value);
        if (o.min) oj["min"] = *o.min;
        if (o.max) oj["max"] = *o.max;
        opts.push_back(std::move(oj));
      }
      p["kernel"] = kernel_usability(*lp, schema);
    } catch (const PluginTrustError& e) {
      p["error"] = e.what();
      p["refused"] = true;
      rc = kExitInvalid;
    } catch (const std::exception& e) {
      p["error"] = e.what();
    }
    arr.push_back(p);
  }
  if (json) {
    std::cout << nlohmann::json{{"api_version", to_string(kPluginApiVersion)},
                                {"kernel", KernelFeatures::running().release()},
                                {"search_path", registry.search_dirs()},
                                {"plugins", arr}}
                     .dump(2)
              << "\n";
    return rc;
  }
  std::cout << "plugin API " << to_string(kPluginApiVersion) << "; kernel "
            << KernelFeatures::running().release() << "; search path:\n";
  for (auto& d : registry.search_dirs()) std::cout << "  " << d << "\n";
  if (arr.empty()) std::cout << "no plugins found\n";
  for (auto& p : arr) {
    if (p.contains("error")) {
      std::printf("%-10s  unusable: %s\n", p["name"].get<std::string>().c_str(),
                  p["error"].get<std::string>().c_str());
      continue;
    }
    std::printf("%-10s %-8s API %-6s %s\n           %s\n",
                p["name"].get<std::string>().c_str(),
                p["version"].get<std::string>().c_str(),
                p["api_version"].get<std::string>().c_str(),
                p["description"].get<std::string>().c_str(),
                p["path"].get<std::string>().c_str());
    auto& k = p["kernel"];
    if (k.contains("needs_options"))
      std::printf("           on this kernel: depends on the required options\n");
    else if (!k["declared"].get<bool>())
      std::printf("           on this kernel: declares no kernel requirements (API < 2.2)\n");
    else
      std::printf("           on this kernel, with defaults: %s\n",
                  verdict(k["defaults"]).c_str());
    for (auto& o : p["options"]) {
      std::printf("           option %-18s %s: %s\n", o["name"].get<std::string>().c_str(),
                  option_summary(o).c_str(), o["description"].get<std::string>().c_str());
      if (!k.value("declared", false) || !k.contains("options") ||
          !k["options"].contains(o["name"].get<std::string>()))
        continue;
      // Only values that fare otherwise than the defaults (--json: all).
      for (auto& v : k["options"][o["name"].get<std::string>()])
        if (verdict(v) != verdict(k["defaults"]))
          std::printf("             %s = %s: %s\n", o["name"].get<std::string>().c_str(),
                    v["value"].dump().c_str(), verdict(v).c_str());
    }
  }
  return rc;
}

}  // namespace bpfmgr
