#include "commands.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "handles.hpp"
#include "kernel_features.hpp"
#include "loader.hpp"
#include "manifest.hpp"
#include "plugin_trust.hpp"
#include "resolve.hpp"
#include "run_dir.hpp"
#include "serve.hpp"
#include "shared_maps.hpp"
#include "system.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

void print_diagnostics(const Diagnostics& d, bool json) {
  if (json) {
    auto arr = nlohmann::json::array();
    for (auto& i : d.sorted())
      arr.push_back({{"file", i.pos.file}, {"line", i.pos.line},
                     {"column", i.pos.column}, {"message", i.message},
                     {"hint", i.hint}});
    std::cout << nlohmann::json{{"ok", false}, {"errors", arr}}.dump(2) << "\n";
  } else {
    std::cerr << d.format();
    std::cerr << d.items().size() << " error" << (d.items().size() == 1 ? "" : "s")
              << "; nothing was loaded\n";
  }
}

// Parses and resolves a manifest; prints every problem on failure.
// `registry` must outlive the result: it caches the loaded plugins.
std::optional<ResolvedManifest> prepare(const std::string& path,
                                        const std::string& pin_root_override,
                                        std::unique_ptr<PluginRegistry>& registry,
                                        bool json) {
  Diagnostics d;
  auto m = parse_manifest_file(path, d);
  std::optional<ResolvedManifest> r;
  if (m) {
    if (!pin_root_override.empty()) m->pin_root = pin_root_override;
    registry = std::make_unique<PluginRegistry>(m->plugin_path);
    r = resolve_manifest(std::move(*m), *registry, d);
  }
  // Shared maps are compared with their final definitions here, for
  // validate and load alike: a manifest that validates cannot fail load
  // on a map mismatch.
  if (r)
    for (auto& p : shared_map_problems(*r)) d.error(p.pos, p.message);
  if (r && !d.empty()) r.reset();
  if (!r) print_diagnostics(d, json);
  return r;
}

// Why `pin_root` cannot be read ("" when it can, or when it does not
// exist: then there is truly nothing under it). A non-root user must hear
// "permission denied", not "no instances".
std::string pin_root_unreadable(const std::string& pin_root) {
  if (::access(pin_root.c_str(), R_OK | X_OK) == 0 || errno == ENOENT) return "";
  int err = errno;
  return std::string(err == EACCES ? "permission denied: " : "") + "cannot read " +
         pin_root + ": " + errno_text(err) +
         (err == EACCES ? " (bpfmgr needs root to see pinned instances)" : "");
}

// Reading a pinned object needs privileges even where the directory is
// world-readable: a denied bpf() says so instead of "no state record".
std::string bpf_access_denied(const std::string& pin_root,
                              const std::vector<std::string>& names) {
  PinLayout layout(pin_root);
  for (auto& n : names) {
    Fd fd(bpf_obj_get(layout.instance(n).state().c_str()));
    if (!fd && (errno == EPERM || errno == EACCES))
      return "permission denied: cannot open the pins under " + pin_root + ": " +
             errno_text(errno) + " (bpfmgr needs root, or CAP_BPF and CAP_SYS_ADMIN)";
  }
  return "";
}

// Every directory entry of a pin root: without privileges, bpfmgr's own
// instances cannot be told from foreign ones, so all are checked.
std::vector<std::string> entries_of(const std::string& pin_root) {
  auto seen = observe_pin_root(PinLayout(pin_root));
  auto out = seen.instances;
  for (auto& f : seen.foreign) out.push_back(f.name);
  return out;
}

nlohmann::json degraded_json(const KernelRequirements& k) {
  auto out = nlohmann::json::array();
  for (auto& d : k.degraded) out.push_back({{"what", d.what}, {"because", d.because}});
  return out;
}

// A sample's value as /metrics prints it: integers without a fraction.
std::string number_text(const nlohmann::json& v) {
  if (!v.is_number()) return "NaN";
  double d = v.get<double>();
  char buf[32];
  std::snprintf(buf, sizeof buf, d == std::floor(d) && std::fabs(d) < 1e15 ? "%.0f" : "%.17g", d);
  return buf;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

int cmd_validate(const std::string& manifest, bool json) {
  std::unique_ptr<PluginRegistry> registry;
  auto r = prepare(manifest, "", registry, json);
  if (!r) return kExitInvalid;
  if (json) {
    auto inst = nlohmann::json::array();
    for (auto& i : r->instances)
      inst.push_back({{"name", i.spec->name}, {"plugin", i.plugin->info.name},
                      {"version", i.plugin->info.version},
                      {"options", options_to_json(i.options)},
                      {"degraded", degraded_json(i.kernel)}});
    std::cout << nlohmann::json{{"ok", true},
                                {"kernel", KernelFeatures::running().release()},
                                {"instances", inst}}
                     .dump(2)
              << "\n";
  } else {
    std::cout << manifest << ": ok, " << r->instances.size()
              << " enabled instance(s)\n";
    for (auto& i : r->instances)
      for (auto& dg : i.kernel.degraded)
        std::cout << "  instance '" << i.spec->name << "' will run " << dg.what
                  << " on this kernel (" << KernelFeatures::running().release()
                  << "): " << dg.because << "\n";
  }
  return kExitOk;
}

int cmd_load(const LoadArgs& a) {
  std::unique_ptr<PluginRegistry> registry;
  auto r = prepare(a.manifest, a.pin_root_override, registry, a.json);
  if (!r) return kExitInvalid;
  auto fail = [&](const std::string& what, const std::string& then, int code) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", what}, {"then", then}}.dump(2)
                << "\n";
    std::cerr << "error: " << what << "\n" << then << "\n";
    return code;
  };
  // Checked before anything is created (a relative --pin-root included).
  ensure_bpffs();
  if (auto why = pin_root_problem(r->manifest.pin_root); !why.empty())
    return fail(why, "nothing was done", kExitInvalid);
  LoadReport rep;
  try {
    LoadOptions lo;
    lo.dry_run = a.dry_run;
    lo.reset_maps = a.reset_maps;
    lo.lock_wait = a.no_wait ? LockWait::Fail : LockWait::Block;
    rep = load_manifest(*r, lo);
  } catch (const LockBusy& e) {
    return fail(e.what(), "nothing was done (--no-wait)", kExitFailed);
  } catch (const Interrupted& e) {
    return fail(e.what(), "", 128 + (e.signal ? e.signal : SIGTERM));
  } catch (const RollbackIncomplete& e) {
    return fail(e.what(), "`bpfmgr status` shows what is left; `bpfmgr unpin` removes it",
                kExitFailed);
  } catch (const CommitIncomplete& e) {
    return fail(e.what(),
                "the commit is journaled: the next `bpfmgr load` or `bpfmgr unpin` "
                "finishes it",
                kExitFailed);
  } catch (const std::exception& e) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", e.what()}}.dump(2) << "\n";
    std::cerr << "error: " << e.what() << "\n"
              << "the load was rolled back; nothing it made is left\n";
    return kExitFailed;
  }
  for (auto& x : rep.recovered) std::cerr << "recovered: " << x << "\n";
  for (auto& x : rep.repaired) std::cerr << "repaired: " << x << "\n";
  if (rep.interrupted_by)
    std::cerr << "interrupted during the commit: the load was finished\n";
  if (a.json) {
    std::cout << nlohmann::json{{"ok", true},
                                {"recovered", rep.recovered},
                                {"repaired", rep.repaired},
                                {"pin_root", r->manifest.pin_root},
                                {"dry_run", a.dry_run},
                                {"loaded", rep.loaded},
                                {"updated", rep.updated},
                                {"unchanged", rep.unchanged},
                                {"removed", rep.removed},
                                {"verified", rep.verified}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  if (a.dry_run) {
    std::cout << "dry run: " << rep.verified.size()
              << " instance(s) passed the verifier (" << join(rep.verified)
              << "); nothing was pinned or attached\n";
    return kExitOk;
  }
  if (rep.loaded.empty() && rep.updated.empty() && rep.removed.empty()) {
    std::cout << "nothing to do: all " << rep.unchanged.size()
              << " instance(s) are loaded and unchanged\n";
    return kExitOk;
  }
  if (!rep.loaded.empty()) std::cout << "loaded: " << join(rep.loaded) << "\n";
  if (!rep.updated.empty()) std::cout << "updated: " << join(rep.updated) << "\n";
  if (!rep.unchanged.empty()) std::cout << "unchanged: " << join(rep.unchanged) << "\n";
  if (!rep.removed.empty()) std::cout << "removed: " << join(rep.removed) << "\n";
  std::cout << "pinned under " << r->manifest.pin_root << "\n";
  return kExitOk;
}

int cmd_unpin(const UnpinArgs& a) {
  PluginRegistry registry;
  if (auto why = pin_root_problem(a.pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitInvalid;
  }
  // Without privileges the truth is "permission denied", not "nothing
  // pinned" (and not a lock error from /run).
  if (auto why = pin_root_unreadable(a.pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitFailed;
  }
  {
    std::error_code ec;
    if (fs::exists(a.pin_root, ec))
      if (auto why = bpf_access_denied(
              a.pin_root, a.instances.empty() ? entries_of(a.pin_root) : a.instances);
          !why.empty()) {
        std::cerr << "error: " << why << "\n";
        return kExitFailed;
      }
  }
  UnpinReport rep;
  try {
    rep = unpin(a.pin_root, a.instances, registry,
                a.no_wait ? LockWait::Fail : LockWait::Block);
  } catch (const std::exception& e) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", e.what()}}.dump() << "\n";
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  if (a.json) {
    std::cout << nlohmann::json{{"ok", rep.ok()}, {"removed", rep.removed},
                                {"recovered", rep.recovered},
                                {"left_alone", rep.left_alone},
                                {"errors", rep.errors}}
                     .dump()
              << "\n";
  } else {
    if (!a.quiet || !rep.ok()) {
      for (auto& x : rep.recovered) std::cout << "recovered: " << x << "\n";
      // Leftovers of an interrupted load were removed above: not "nothing".
      if (!rep.removed.empty())
        std::cout << "unpinned: " << join(rep.removed) << "\n";
      else if (rep.recovered.empty())
        std::cout << "nothing to unpin under " << a.pin_root << "\n";
      if (!rep.left_alone.empty())
        std::cout << "left alone (not bpfmgr's): " << join(rep.left_alone) << "\n";
    }
    for (auto& e : rep.errors) std::cerr << "error: " << e << "\n";
  }
  return rep.ok() ? kExitOk : kExitFailed;
}

namespace {

// serve's line of `bpfmgr status`: ready, or degraded and why per instance.
void print_serve_state(const nlohmann::json& sv) {
  std::cout << "serve PID " << sv.value("pid", 0);
  if (sv.value("starting", false)) {
    std::cout << ": starting (its first apply has not finished)\n\n";
    return;
  }
  auto problems = sv.value("problems", nlohmann::json::array());
  std::cout << " (" << sv.value("manifest", std::string("?")) << "): ";
  if (sv.value("ready", false))
    std::cout << "ready, " << sv.value("instances", 0) << " instance(s) up";
  else
    std::cout << "degraded, " << sv.value("up", 0) << " of " << sv.value("instances", 0)
              << " instance(s) up";
  std::cout << " (since " << sv.value("since", std::string("?")) << ")\n";
  if (!sv.value("manifest_valid", true))
    std::cout << "  the manifest has errors (see serve's log); what runs is kept\n";
  for (auto& p : problems)
    std::cout << "  " << p.value("instance", std::string("?")) << ": "
              << p.value("why", std::string("?")) << "\n";
  std::cout << "\n";
}

}  // namespace

int cmd_status(const std::string& pin_root, const std::vector<std::string>& instances,
               bool json) {
  PluginRegistry registry;
  if (auto why = pin_root_problem(pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitInvalid;
  }
  if (auto why = pin_root_unreadable(pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitFailed;
  }
  if (auto why = bpf_access_denied(pin_root, instances.empty() ? entries_of(pin_root)
                                                               : instances);
      !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitFailed;
  }
  auto whole = pin_root_status(pin_root, instances, registry);
  // What a running serve could not apply (its own record, not a guess).
  if (auto sv = serve_state_for_status(pin_root, instances); !sv.is_null()) whole["serve"] = sv;
  auto& all = whole["instances"];
  int rc = kExitOk;
  for (auto& s : all) {
    if (s.value("missing", false)) {
      std::cerr << "error: " << s["error"].get<std::string>() << "\n";
      rc = kExitFailed;
    }
    // Kernel facts are still shown; the plugin's own code was not run.
    if (s.value("plugin_refused", false) && rc == kExitOk) rc = kExitInvalid;
  }
  if (json) {
    std::cout << whole.dump(2) << "\n";
    return rc;
  }
  if (whole.contains("serve")) print_serve_state(whole["serve"]);
  for (auto& l : whole["leftovers"])
    std::cout << "leftover " << l["name"].get<std::string>() << ": "
              << l["why"].get<std::string>() << "\n\n";
  for (auto& i : whole["interrupted"]) {
    if (i.value("left_alone", false)) {
      std::cout << "staging name " << i["staging"].get<std::string>() << ": "
                << i["next"].get<std::string>() << "\n\n";
      continue;
    }
    std::cout << "interrupted load of " << i["instance"].get<std::string>()
              << ": staged in " << i["staging"].get<std::string>()
              << (i["committing"].get<bool>() ? ", its commit was under way"
                                              : ", never committed")
              << " (" << i["next"].get<std::string>() << ")\n";
    for (auto& l : i["links"])
      std::cout << "  staged link " << l["name"].get<std::string>()
                << (l.contains("id") ? " id " + std::to_string(l["id"].get<int>()) +
                                           " runs prog " +
                                           std::to_string(l["prog_id"].get<int>()) +
                                           " (attached until removed)"
                                     : std::string(""))
                << "\n";
    for (auto [key, what] : {std::pair{"programs", "programs"}, std::pair{"maps", "maps"}})
      if (!i.value(key, nlohmann::json::array()).empty()) {
        std::cout << "  staged " << what << ":";
        for (auto& n : i[key]) std::cout << " " << n.get<std::string>();
        std::cout << "\n";
      }
    std::cout << "\n";
  }
  if (!whole["foreign"].empty()) {
    std::cout << "not bpfmgr's (left alone):";
    for (auto& f : whole["foreign"])
      std::cout << " " << f["name"].get<std::string>() << " (" << f["why"].get<std::string>()
                << ")";
    std::cout << "\n\n";
  }
  if (all.empty()) {
    if (instances.empty()) std::cout << "no instances under " << pin_root << "\n";
    return rc;
  }
  for (auto& s : all) {
    if (s.value("missing", false)) continue;  // said on stderr
    std::cout << "instance " << s["instance"].get<std::string>();
    if (s.contains("error")) {
      std::cout << ": " << s["error"].get<std::string>() << "\n\n";
      continue;
    }
    if (s.contains("drift"))
      std::cout << "  NOT AS LOADED: " << s["drift"].get<std::string>() << "\n";
    std::cout << "  plugin " << s["plugin"].get<std::string>() << " "
              << s["plugin_version"].get<std::string>() << "  loaded "
              << s["loaded_at"].get<std::string>() << "\n"
              << "  manifest " << s["manifest"].get<std::string>() << "\n";
    // What this kernel could not give it (plugin API 2.2's degrade()).
    for (auto& dg : s.value("degraded", nlohmann::json::array()))
      std::cout << "  degraded: running " << dg["what"].get<std::string>() << " because "
                << dg["because"].get<std::string>() << "\n";
    std::cout << "  programs:\n";
    for (auto& p : s["programs"]) {
      std::printf("    %-24s id %-6s %-16s", p["name"].get<std::string>().c_str(),
                  p.contains("id") ? std::to_string(p["id"].get<int>()).c_str() : "-",
                  p.value("type", "?").c_str());
      for (auto& t : p["attached_to"]) std::printf(" -> %s", t.get<std::string>().c_str());
      std::printf("\n");
    }
    std::cout << "  maps:\n";
    for (auto& mp : s["maps"]) {
      std::printf("    %-24s id %-6s %-16s max %-8s %s%s\n",
                  mp["name"].get<std::string>().c_str(),
                  mp.contains("id") ? std::to_string(mp["id"].get<int>()).c_str() : "-",
                  mp.value("type", "?").c_str(),
                  mp.contains("max_entries")
                      ? std::to_string(mp["max_entries"].get<long>()).c_str()
                      : "-",
                  mp["pin"].get<std::string>().c_str(),
                  mp.contains("shared_from")
                      ? (" (shared from " + mp["shared_from"].get<std::string>() + ")").c_str()
                      : "");
    }
    std::cout << "  links:\n";
    for (auto& l : s["links"])
      std::printf("    %-24s id %-6s %-16s %s\n", l["name"].get<std::string>().c_str(),
                  l.contains("id") ? std::to_string(l["id"].get<int>()).c_str() : "-",
                  l.value("type", "?").c_str(), l["target"].get<std::string>().c_str());
    int live = 0;
    std::vector<std::string> dead;
    for (auto& h : s["hooks"]) {
      if (h["live"].get<bool>())
        ++live;
      else
        dead.push_back(h["target"].get<std::string>() + " (" +
                       h["reason"].get<std::string>() + ")");
    }
    std::cout << "  hooks: " << live << " live";
    if (!dead.empty()) std::cout << ", " << dead.size() << " missing: " << join(dead);
    std::cout << "\n";
    if (!s["details"].empty()) {
      std::cout << "  details:\n";
      for (auto& [k, v] : s["details"].items())
        std::printf("    %-24s %s\n", k.c_str(), v.get<std::string>().c_str());
    }
    if (!s["counters"].empty()) {
      std::cout << "  counters:\n";
      for (auto& c : s["counters"]) {
        std::printf("    %-24s %llu", c["name"].get<std::string>().c_str(),
                    static_cast<unsigned long long>(c["value"].get<std::uint64_t>()));
        if (c.contains("per_cpu")) {
          std::printf("  (per cpu:");
          for (auto& v : c["per_cpu"])
            std::printf(" %llu", static_cast<unsigned long long>(v.get<std::uint64_t>()));
          std::printf(")");
        }
        std::printf("\n");
      }
    }
    if (!s.value("metrics", nlohmann::json::array()).empty()) {
      std::cout << "  metrics:\n";
      for (auto& mt : s["metrics"]) {
        std::string labels;
        for (auto& [k, v] : mt["labels"].items())
          labels += (labels.empty() ? "" : ",") + k + "=\"" + v.get<std::string>() + "\"";
        std::cout << "    " << mt["name"].get<std::string>()
                  << (labels.empty() ? "" : "{" + labels + "}") << " " << number_text(mt["value"])
                  << " (" << mt["kind"].get<std::string>() << ")\n";
      }
    }
    if (s.contains("status_error"))
      std::cout << "  counters unavailable: " << s["status_error"].get<std::string>() << "\n";
    std::cout << "\n";
  }
  return rc;
}

namespace {

nlohmann::json option_value_json(const OptionValue& v) {
  nlohmann::json j;
  std::visit([&](auto& x) { j = x; }, v);
  return j;
}

// What kernel_requirements() says for `options` on this kernel: usable, the
// needs it lacks (worded as validate words them) and the simpler forms.
nlohmann::json kernel_answer(const PluginModule& plugin, const Options& options) {
  nlohmann::json out;
  try {
    auto req = plugin.kernel_requirements(options, KernelFeatures::running());
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
    out["degraded"] = degraded_json(req);
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
nlohmann::json kernel_usability(const PluginModule& plugin,
                                const std::vector<OptionSpec>& schema) {
  nlohmann::json k{{"release", KernelFeatures::running().release()}};
  k["declared"] = BPFMGR_HAS_FIELD(&plugin.api(), bpfmgr_plugin_api, kernel_requirements) &&
                  plugin.api().kernel_requirements;
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
  k["defaults"] = kernel_answer(plugin, Options(defaults));
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
      auto answer = kernel_answer(plugin, Options(with));
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
      p["kernel"] = kernel_usability(*lp->plugin, schema);
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

// ------------------------------------------------------------------ events

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct EventSink {
  PluginInstance* formatter;
  EventFormat format;
  long seen = 0;
  long limit = 0;
  long format_errors = 0;
};

// Id of the map pinned at `pin`, 0 when the pin is gone.
std::uint32_t pinned_map_id(const std::string& pin) {
  Fd fd(bpf_obj_get(pin.c_str()));
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (!fd || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return 0;
  return info.id;
}

int on_record(void* ctx, void* data, size_t size) {
  auto* sink = static_cast<EventSink*>(ctx);
  std::optional<std::string> line;
  try {
    line = sink->formatter->format_event(
        std::span<const std::byte>(static_cast<const std::byte*>(data), size),
        sink->format);
  } catch (const std::exception& e) {
    // One bad record is skipped; the reader goes on.
    if (sink->format_errors++ == 0) spdlog::warn("events: {}", e.what());
    return 0;
  }
  if (line) {
    // Flushed once per batch by the poll loop, not per record: a write(2)
    // per event cost more than formatting it.
    std::fwrite(line->data(), 1, line->size(), stdout);
    std::fputc('\n', stdout);
    ++sink->seen;
  }
  // A negative return stops ring_buffer__poll early once we have enough.
  return (sink->limit > 0 && sink->seen >= sink->limit) ? -1 : 0;
}
}  // namespace

int cmd_events(const EventsArgs& a) {
  if (auto why = pin_root_problem(a.pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitInvalid;
  }
  if (auto why = pin_root_unreadable(a.pin_root); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitFailed;
  }
  if (auto why = bpf_access_denied(a.pin_root, {a.instance}); !why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitFailed;
  }
  PinLayout layout(a.pin_root);
  auto rec = lookup_state(layout.instance(a.instance).state());
  auto& st = rec.state;
  if (!st) {
    if (rec.kind == StateLookup::Absent)
      std::cerr << "error: no instance '" << a.instance << "' under " << a.pin_root
                << " (load it first with `bpfmgr load`)\n";
    else
      std::cerr << "error: " << layout.instance(a.instance).dir << ": " << rec.why << "\n";
    return kExitFailed;
  }
  PluginRegistry registry;
  std::shared_ptr<LoadedPlugin> plugin;
  try {
    plugin = registry.load_file(st->plugin_path, st->plugin_sha256,
                                kRecordedHashOrigin);
  } catch (const PluginTrustError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitInvalid;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  auto map = plugin->plugin->events_map();
  if (!map) {
    std::cerr << "error: plugin '" << st->plugin << "' does not stream events\n";
    return kExitInvalid;
  }
  auto ctx = open_pinned(layout, a.instance, *st, *plugin->plugin);
  if (!plugin->plugin->api().format_event) {
    std::cerr << "error: plugin '" << st->plugin << "' has no event formatter\n";
    return kExitInvalid;
  }
  std::unique_ptr<PluginInstance> formatter;
  try {
    formatter = plugin->plugin->create(*ctx);
  } catch (const std::exception& e) {
    std::cerr << "error: plugin '" << st->plugin << "': " << e.what() << "\n";
    return kExitFailed;
  }
  int fd;
  try {
    fd = ctx->map_fd(*map);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  // A ring buffer has one consumer position: two readers would each see
  // only part of the records. One reader per map: the run directory's
  // reader lock, keyed by the map's id (bpffs pins cannot be locked).
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &info_len) != 0) {
    std::cerr << "error: cannot inspect ring buffer: " << errno_text(errno) << "\n";
    return kExitFailed;
  }
  std::optional<RunLock> reader_lock;
  try {
    reader_lock.emplace(
        RunLock::acquire(LockRole::EventsReader, std::to_string(info.id), LockWait::Fail));
  } catch (const LockBusy& e) {
    std::cerr << "error: another `bpfmgr events` is reading instance '" << a.instance
              << "' (PID " << e.holder << ", ring buffer map id " << info.id
              << "); a second reader would split the records between the two\n";
    return kExitFailed;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  // Where the ring buffer is pinned: if that pin goes (unpin) or names
  // another map (a reload with --reset-maps), nothing will arrive here again.
  std::string ring_pin = layout.instance(a.instance).map(*map);
  for (auto& sm : st->shared_maps)
    if (sm.map == *map) ring_pin = sm.pin;
  EventSink sink{formatter.get(), a.json ? EventFormat::Json : EventFormat::Table, 0,
                 a.count};
  RingBuffer rb(ring_buffer__new(fd, on_record, &sink, nullptr));
  if (!rb) {
    std::cerr << "error: cannot open ring buffer '" << *map << "': "
              << errno_text(errno) << "\n";
    return kExitFailed;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (!a.json) {
    try {
      std::cout << formatter->event_header() << "\n";
    } catch (const std::exception& e) {
      std::cerr << "error: plugin '" << st->plugin << "': " << e.what() << "\n";
      return kExitFailed;
    }
    std::fflush(stdout);
  }
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration<double>(a.duration_s);
  // Producers may submit without waking the reader until a batch has built
  // up (probes' ring_buffer_wakeup_kb): records that arrived without a
  // wake-up are consumed when the poll times out, so they are late by at
  // most kPollMs, never lost. Output is flushed once per batch.
  constexpr int kPollMs = 100;
  auto next_check = std::chrono::steady_clock::now();
  while (!g_stop) {
    int n = ring_buffer__poll(rb.get(), kPollMs);
    if (n == 0) n = ring_buffer__consume(rb.get());
    std::fflush(stdout);
    if (a.count > 0 && sink.seen >= a.count) break;  // on_record stopped the poll
    if (n < 0 && n != -EINTR) {
      std::cerr << "error: reading ring buffer '" << *map << "' of instance '"
                << a.instance << "': " << errno_text(n) << "\n";
      return kExitFailed;
    }
    auto now = std::chrono::steady_clock::now();
    if (a.duration_s > 0 && now >= deadline) break;
    if (now >= next_check) {
      next_check = now + std::chrono::milliseconds(500);
      if (pinned_map_id(ring_pin) != info.id) {
        std::cerr << "error: instance '" << a.instance << "' was unpinned or its "
                  << "ring buffer replaced while reading (" << ring_pin
                  << "); stopping after " << sink.seen << " event(s)\n";
        return kExitFailed;
      }
    }
  }
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace bpfmgr
