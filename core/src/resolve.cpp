#include "resolve.hpp"


#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <set>

#include <spdlog/spdlog.h>

#include "fingerprint.hpp"
#include "object_spec.hpp"
#include "plugin_trust.hpp"
#include "record_json.hpp"
#include "instance_object.hpp"

namespace bpfmgr {

const char* option_type_name(OptionType t) {
  switch (t) {
    case OptionType::Bool: return "a boolean";
    case OptionType::Int: return "an integer";
    case OptionType::String: return "a string";
    case OptionType::StringList: return "an array of strings";
    case OptionType::IntList: return "an array of integers";
  }
  return "?";
}

namespace {

nlohmann::json raw_value_json(const RawValue& v) {
  switch (v.kind) {
    case RawValue::Kind::Bool: return v.boolean;
    case RawValue::Kind::Int: return v.integer;
    case RawValue::Kind::String: return v.string;
    case RawValue::Kind::Array: {
      auto a = nlohmann::json::array();
      for (auto& i : v.items) a.push_back(raw_value_json(i));
      return a;
    }
    case RawValue::Kind::Other: break;
  }
  return nullptr;
}

}  // namespace

std::string input_fingerprint(const InstanceSpec& spec, const Manifest& m,
                              const std::string& plugin_path, const FileIdentity& id) {
  using namespace std::chrono;
  auto now_ns = duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
  if (id.ctime_ns > now_ns - 2'000'000'000LL) return "";
  nlohmann::json j;
  j["bpfmgr"] = BPFMGR_VERSION;
  j["instance"] = spec.name;
  j["plugin"] = spec.plugin;
  j["sha256"] = spec.sha256;
  auto& options = j["options"] = nlohmann::json::object();
  for (auto& o : spec.options) options[o.key] = raw_value_json(o.value);
  auto& shares = j["maps"] = nlohmann::json::array();
  for (auto& s : spec.maps) shares.push_back({s.map, s.instance, s.remote_map});
  j["pin_root"] = m.pin_root;
  j["file"] = {plugin_path, id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns};
  return fnv1a_hex(j.dump());
}

namespace {

std::string range_text(const OptionSpec& s) {
  std::string r;
  if (s.min && s.max)
    r = "between " + std::to_string(*s.min) + " and " + std::to_string(*s.max);
  else if (s.min)
    r = "at least " + std::to_string(*s.min);
  else if (s.max)
    r = "at most " + std::to_string(*s.max);
  return r;
}

bool in_range(const OptionSpec& s, std::int64_t v) {
  return (!s.min || v >= *s.min) && (!s.max || v <= *s.max);
}

std::string choices_text(const OptionSpec& s) {
  std::string r = "one of:";
  for (auto& c : s.choices) r += " '" + c + "'";
  return r;
}

bool check_choice(const OptionSpec& s, const std::string& v, SourcePos pos,
                  const std::string& inst, Diagnostics& d) {
  if (s.choices.empty() ||
      std::find(s.choices.begin(), s.choices.end(), v) != s.choices.end())
    return true;
  auto hint = did_you_mean(v, s.choices);
  d.error(pos, "option '" + s.name + "' of instance '" + inst + "': '" +
                   shorten(v) + "' is not allowed",
          hint.empty() ? choices_text(s) : hint);
  return false;
}

// Strings go to C APIs and the kernel, which stop at a NUL: "x\u0000y"
// would quietly mean "x".
bool has_nul(const OptionSpec& s, const std::string& v, SourcePos pos,
             const std::string& inst, Diagnostics& d) {
  if (v.find('\0') == std::string::npos) return false;
  d.error(pos, "option '" + s.name + "' of instance '" + inst + "': '" + shorten(v) +
                   "' contains a NUL byte");
  return true;
}

// Converts one option value per its spec; reports problems at the value.
std::optional<OptionValue> convert(const OptionSpec& s, const RawValue& n,
                                   const std::string& inst, Diagnostics& d) {
  using Kind = RawValue::Kind;
  auto pos = n.pos;
  auto wrong = [&] {
    d.error(pos, "option '" + s.name + "' of instance '" + inst +
                     "' must be " + option_type_name(s.type),
            s.description);
    return std::nullopt;
  };
  auto out_of_range = [&](std::int64_t v, SourcePos p) {
    d.error(p, "option '" + s.name + "' of instance '" + inst + "': " +
                   std::to_string(v) + " is out of range",
            "must be " + range_text(s));
  };
  switch (s.type) {
    case OptionType::Bool:
      if (n.kind == Kind::Bool) return OptionValue{n.boolean};
      return wrong();
    case OptionType::Int:
      if (n.kind == Kind::Int) {
        if (!in_range(s, n.integer)) {
          out_of_range(n.integer, pos);
          return std::nullopt;
        }
        return OptionValue{n.integer};
      }
      return wrong();
    case OptionType::String:
      if (n.kind == Kind::String) {
        if (has_nul(s, n.string, pos, inst, d)) return std::nullopt;
        if (!check_choice(s, n.string, pos, inst, d)) return std::nullopt;
        return OptionValue{n.string};
      }
      return wrong();
    case OptionType::StringList: {
      if (n.kind != Kind::Array) return wrong();
      std::vector<std::string> v;
      bool ok = true;
      for (auto& e : n.items) {
        if (e.kind != Kind::String) {
          d.error(e.pos, "option '" + s.name + "' of instance '" +
                             inst + "' must hold only strings");
          ok = false;
          continue;
        }
        if (has_nul(s, e.string, e.pos, inst, d)) {
          ok = false;
          continue;
        }
        ok &= check_choice(s, e.string, e.pos, inst, d);
        v.push_back(e.string);
      }
      if (!ok) return std::nullopt;
      return OptionValue{std::move(v)};
    }
    case OptionType::IntList: {
      if (n.kind != Kind::Array) return wrong();
      std::vector<std::int64_t> v;
      bool ok = true;
      for (auto& e : n.items) {
        if (e.kind != Kind::Int) {
          d.error(e.pos, "option '" + s.name + "' of instance '" +
                             inst + "' must hold only integers");
          ok = false;
          continue;
        }
        if (!in_range(s, e.integer)) {
          out_of_range(e.integer, e.pos);
          ok = false;
        }
        v.push_back(e.integer);
      }
      if (!ok) return std::nullopt;
      return OptionValue{std::move(v)};
    }
  }
  return wrong();
}

}  // namespace

std::string option_value_text(const OptionValue& v) {
  auto quoted = [](const std::string& s) { return "\"" + shorten(s) + "\""; };
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (auto* s = std::get_if<std::string>(&v)) return quoted(*s);
  std::string out = "[";
  if (auto* l = std::get_if<std::vector<std::string>>(&v))
    for (auto& s : *l) out += (out.size() > 1 ? ", " : "") + quoted(s);
  if (auto* l = std::get_if<std::vector<std::int64_t>>(&v))
    for (auto i : *l) out += (out.size() > 1 ? ", " : "") + std::to_string(i);
  return shorten(out + "]", 2 * kMaxQuotedBytes);
}

KernelRequirements kernel_requirements_of(const LoadedPlugin& plugin, const Options& options,
                                          const ObjectSpec* object, KernelFeatures& kernel) {
  auto req = plugin.plugin->kernel_requirements(options, kernel);
  if (!object) return req;
  std::string programs;
  for (auto& p : object->programs)
    if (p.autoload && p.attaches_through_perf_event())
      programs += (programs.empty() ? "" : ", ") + p.name;
  if (!programs.empty())
    req.needs.push_back({BPFMGR_FEATURE_LINK_TYPE, "perf_event", "", "5.15",
                         "its programs " + programs + " attach through perf events; before "
                         "5.15 their attachment has no BPF link to pin and would end with "
                         "the bpfmgr process",
                         kernel.has(Feature::LinkType, "perf_event")});
  return req;
}

KernelRequirements check_kernel_requirements(
    const ResolvedInstance& r, const ObjectSpec* object,
    const std::map<std::string, SourcePos>& key_pos, KernelFeatures& kernel, Diagnostics& d) {
  const auto& spec = *r.spec;
  auto who = "instance '" + spec.name + "' (plugin " + r.plugin->info.name + "): ";
  KernelRequirements req;
  try {
    req = kernel_requirements_of(*r.plugin, r.options, object, kernel);
  } catch (const std::exception& e) {
    d.error(spec.plugin_pos, who + e.what());
    return req;
  }
  for (auto& n : req.needs) {
    if (n.met) continue;
    std::string asked;
    SourcePos pos = spec.options_pos;
    if (!n.key.empty()) {
      asked = n.key;
      if (r.options.has(n.key))
        asked += " = " + option_value_text(r.options.all().at(n.key));
      if (auto it = key_pos.find(n.key); it != key_pos.end())
        pos = it->second;
      else if (r.options.has(n.key))
        asked += " (the default)";
      asked += " ";
    }
    if (KernelFeatures::needs_bpf(n.kind) && !kernel.can_probe()) {
      d.error(pos, who + asked + "needs " + describe_feature(n.kind, n.name) +
                       ", which only root (CAP_BPF) can check",
              "run bpfmgr validate as root");
      continue;
    }
    d.error(pos,
            who + asked + "needs " + describe_feature(n.kind, n.name) +
                (n.since.empty() ? "" : " (Linux " + n.since + "+)") + "; this kernel is " +
                kernel.release(),
            n.hint);
  }
  return req;
}

namespace {

// What one resolution has learnt of the plugin search path.
struct PluginLookups {
  // The plugins on the search path, listed (a scan of every directory) the
  // first time a plugin is not found, for the hint.
  std::optional<std::vector<std::string>> available;
  // Plugins found and trusted, by the manifest's name (or path) and
  // expected sha256: instances of one plugin check its file once per
  // manifest, not once each.
  std::map<std::pair<std::string, std::string>, std::shared_ptr<LoadedPlugin>> trusted;
};

// Step 1: the instance's plugin, found on the search path and trusted.
std::shared_ptr<LoadedPlugin> resolve_plugin(const InstanceSpec& spec, const Manifest& m,
                                             PluginRegistry& registry, PluginLookups& seen,
                                             Diagnostics& d) {
  auto& available = seen.available;
  auto& plugin = seen.trusted[{spec.plugin, spec.sha256}];
  if (!plugin) {
    try {
      plugin = registry.load(spec.plugin, m.dir, spec.sha256);
    } catch (const PluginTrustError& e) {
      d.error(spec.plugin_pos, e.what());  // found, but refused: no "did you mean"
      return nullptr;
    } catch (const PluginLoadError& e) {
      if (!available) {
        available.emplace();
        for (auto& [name, path] : registry.discover()) available->push_back(name);
      }
      auto hint = did_you_mean(spec.plugin, *available);
      if (hint.empty() && !available->empty()) {
        hint = "available plugins:";
        for (auto& a : *available) hint += " " + a;
      }
      d.error(spec.plugin_pos, e.what(), hint);
      return nullptr;
    }
  }
  if (plugin->info.name != spec.plugin && spec.plugin.find('/') == std::string::npos &&
      spec.plugin.find(".so") == std::string::npos)
    d.error(spec.plugin_pos, plugin->path + " calls itself '" + plugin->info.name +
                                 "', not '" + spec.plugin + "'");
  return plugin;
}

// Step 2: the manifest's options typed by the plugin's schema, defaults
// added. An option that fails its schema is reported and, for the plugin's
// own validate() that follows, replaced by its default; `complete` is false
// when one that has no default is missing or wrong.
struct TypedOptions {
  std::map<std::string, OptionValue> values;
  std::map<std::string, SourcePos> key_pos;
  std::set<std::string> refused;  // keys reported here
  bool complete = true;
  bool recordable = true;  // fits the state record
};
TypedOptions type_options(const InstanceSpec& spec, const std::vector<OptionSpec>& schema,
                          Diagnostics& d) {
  TypedOptions out;
  std::vector<std::string> known;
  for (auto& s : schema) known.push_back(s.name);
  for (auto& option : spec.options) {
    const std::string& key = option.key;
    const SourcePos& kp = option.key_pos;
    out.key_pos[key] = kp;
    auto it = std::find_if(schema.begin(), schema.end(),
                           [&](auto& s) { return s.name == key; });
    if (it == schema.end()) {
      auto hint = did_you_mean(key, known);
      if (hint.empty()) {
        hint = known.empty() ? "this plugin takes no options"
                             : "options of '" + spec.plugin + "':";
        for (auto& kk : known) hint += " " + kk;
      }
      d.error(kp, "unknown option '" + shorten(key) + "' for plugin '" + spec.plugin +
                      "' (instance '" + spec.name + "')",
              hint);
      out.refused.insert(key);
      continue;
    }
    if (auto cv = convert(*it, option.value, spec.name, d))
      out.values[key] = std::move(*cv);
    else
      out.refused.insert(key);
  }
  for (auto& s : schema) {
    if (out.values.count(s.name)) continue;
    bool given = std::any_of(spec.options.begin(), spec.options.end(),
                             [&](auto& o) { return o.key == s.name; });
    if (s.default_value) {
      out.values[s.name] = *s.default_value;  // also in place of a refused value
    } else {
      if (!given)
        d.error(spec.options_pos, "instance '" + spec.name + "' needs option '" + s.name + "'",
                s.description);
      out.complete = false;
    }
  }
  return out;
}

// Step 3: the plugin's own validate() on the typed options, reported in the
// same pass as the schema's errors (but not again for a key the schema
// refused), then what the options and the object as built (`object`) need
// from this kernel.
void check_with_plugin(ResolvedInstance& r, const TypedOptions& typed, const ObjectSpec* object,
                       Diagnostics& d) {
  const auto& spec = *r.spec;
  std::vector<OptionProblem> problems;
  try {
    problems = r.plugin->plugin->validate(r.options);
  } catch (const std::exception& e) {
    problems.push_back({"", std::string("validate() failed: ") + e.what(), ""});
  }
  for (auto& p : problems) {
    if (typed.refused.count(p.key)) continue;
    auto it = typed.key_pos.find(p.key);
    auto pos = it != typed.key_pos.end() ? it->second : spec.options_pos;
    d.error(pos, "instance '" + spec.name + "'" +
                     (p.key.empty() ? "" : ", option '" + p.key + "'") + ": " + p.message,
            p.hint);
  }
  // Checked before anything loads: what this kernel cannot run is an error
  // here, not a verifier or CO-RE failure at load.
  if (typed.refused.empty() && typed.recordable)
    r.kernel =
        check_kernel_requirements(r, object, typed.key_pos, KernelFeatures::running(), d);
}

// Step 4: the instance's object opened once (step 3 reads it as built),
// then, when nothing above found a problem with the instance, prepared by
// its plugin's before_load: the spec validate checks and load takes. An
// object left unprepared is kept for the shared maps' names.
std::shared_ptr<InstanceObject> open_object(const ResolvedInstance& r, const Manifest& m,
                                            Diagnostics& d) {
  try {
    return open_instance_object(r, m.pin_root);
  } catch (const InstanceError& e) {
    d.error(r.spec->plugin_pos, e.what());
    return nullptr;
  }
}
void prepare_object(const ResolvedInstance& r, InstanceObject& object, Diagnostics& d) {
  try {
    object.prepare();
  } catch (const InstanceError& e) {
    d.error(r.spec->plugin_pos, e.what());
  }
}

// One enabled instance: its plugin, typed options, the plugin's checks,
// its prepared object.
std::optional<ResolvedInstance> resolve_instance(const InstanceSpec& spec, const Manifest& m,
                                                 PluginRegistry& registry, PluginLookups& seen,
                                                 Diagnostics& d) {
  auto errors_before = d.items().size();
  ResolvedInstance r;
  r.spec = &spec;
  r.plugin = resolve_plugin(spec, m, registry, seen, d);
  if (!r.plugin) return std::nullopt;
  r.input_fingerprint = input_fingerprint(spec, m, r.plugin->path, r.plugin->id);
  std::vector<OptionSpec> schema;
  try {
    schema = r.plugin->plugin->option_schema();
  } catch (const std::exception& e) {
    d.error(spec.plugin_pos,
            "plugin '" + spec.plugin + "': option_schema() failed: " + e.what());
    return std::nullopt;
  }
  auto typed = type_options(spec, schema, d);
  r.options = Options(typed.values);
  // The options are kept in the instance's state record (state.hpp): a
  // list that could never be recorded fails here, not half-way into load.
  if (auto bytes = options_to_json(r.options).dump().size();
      typed.refused.empty() && bytes > kMaxRecordedOptionsBytes) {
    d.error(spec.options_pos,
            "options of instance '" + spec.name + "' take " + std::to_string(bytes) +
                " bytes in its state record; at most " +
                std::to_string(kMaxRecordedOptionsBytes) + " fit",
            "shorten the long lists (e.g. ports, cidrs)");
    typed.recordable = false;
  }
  r.object = open_object(r, m, d);
  std::optional<ObjectSpec> as_built;
  if (r.object) as_built = r.object->spec();
  if (typed.complete) check_with_plugin(r, typed, as_built ? &*as_built : nullptr, d);
  if (r.object && d.items().size() == errors_before) prepare_object(r, *r.object, d);
  return r;
}

// Shared maps: both sides must have the map, and once both plugins'
// before_load ran, the sharer's must be the owner's by the rule load
// applies to the kernel's map (map_mismatch, object_spec.hpp). validate,
// load and serve all check here: a manifest that resolves cannot fail load
// on a map mismatch.
void check_shared_maps(const std::map<std::string, ResolvedInstance>& by_name,
                       Diagnostics& d) {
  std::map<std::string, ObjectSpec> specs;
  auto spec_of = [&](const ResolvedInstance& r) -> const ObjectSpec* {
    if (!r.object) return nullptr;  // it cannot be opened: reported
    auto it = specs.find(r.spec->name);
    if (it == specs.end()) it = specs.emplace(r.spec->name, r.object->spec()).first;
    return &it->second;
  };
  for (auto& [name, r] : by_name) {
    for (auto& share : r.spec->maps) {
      auto owner = by_name.find(share.instance);
      if (owner == by_name.end()) continue;
      auto* mine = spec_of(r);
      auto* theirs = spec_of(owner->second);
      if (!mine || !theirs) continue;
      auto* a = mine->map(share.map);
      auto* b = theirs->map(share.remote_map);
      if (!a)
        d.error(share.pos, "instance '" + name + "' has no map '" + share.map + "' to share",
                "its maps:" + mine->map_names());
      else if (!b)
        d.error(share.pos,
                "instance '" + share.instance + "' has no map '" + share.remote_map + "'",
                "its maps:" + theirs->map_names());
      else if (!r.object->ready_for_load() || !owner->second.object->ready_for_load())
        continue;  // not prepared: a problem of theirs is reported
      else if (auto why = map_mismatch(*a, *b); !why.empty())
        d.error(share.pos, "map '" + share.map + "' of instance '" + name +
                               "' cannot be instance '" + share.instance + "''s map '" +
                               share.remote_map + "': " + why +
                               " (after both plugins' before_load)");
    }
  }
}

// Owners before sharers (depth-first; cycles are reported).
bool order_by_sharing(const Manifest& m, std::map<std::string, ResolvedInstance>& by_name,
                      std::vector<ResolvedInstance>& out, Diagnostics& d) {
  std::set<std::string> done, visiting;
  std::function<bool(const std::string&)> visit = [&](const std::string& n) {
    // Only resolved instances have a spec; never create an empty entry.
    if (done.count(n) || !by_name.count(n)) return true;
    if (visiting.count(n)) {
      d.error(by_name[n].spec->pos, "instances share maps in a cycle through '" + n + "'");
      return false;
    }
    visiting.insert(n);
    for (auto& share : by_name[n].spec->maps)
      if (by_name.count(share.instance) && !visit(share.instance)) return false;
    visiting.erase(n);
    done.insert(n);
    out.push_back(by_name[n]);
    return true;
  };
  for (auto& spec : m.instances)
    if (spec.enabled && !visit(spec.name)) return false;
  return true;
}

}  // namespace

std::optional<ResolvedManifest> resolve_manifest(Manifest manifest,
                                                 PluginRegistry& registry,
                                                 Diagnostics& d) {
  ResolvedManifest out;
  out.manifest = std::move(manifest);
  const auto& m = out.manifest;

  out.registry = &registry;
  std::map<std::string, ResolvedInstance> by_name;
  PluginLookups plugins_seen;
  for (auto& spec : m.instances) {
    // Instances already reported as malformed or duplicate are skipped.
    if (!spec.enabled || spec.name.empty() || spec.plugin.empty() ||
        by_name.count(spec.name))
      continue;
    if (auto r = resolve_instance(spec, m, registry, plugins_seen, d))
      by_name[spec.name] = std::move(*r);
  }
  check_shared_maps(by_name, d);
  if (auto& k = KernelFeatures::running(); k.answers_computed())
    spdlog::debug("kernel {}: {} feature(s) probed in {:.1f} ms", k.release(),
                  k.answers_computed(), k.probe_seconds() * 1e3);
  if (!d.empty()) return std::nullopt;
  if (!order_by_sharing(m, by_name, out.instances, d)) return std::nullopt;
  return out;
}

}  // namespace bpfmgr
