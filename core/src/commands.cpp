// The commands that change or show what is pinned: validate, load, unpin,
// status (events, plugins and bench have files of their own).
#include "commands.hpp"

#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "kernel_features.hpp"
#include "loader.hpp"
#include "manifest.hpp"
#include "mounts.hpp"
#include "pin_root_access.hpp"
#include "record_json.hpp"
#include "resolve.hpp"
#include "serve.hpp"

namespace bpfmgr {

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

// Resolves a parsed manifest (`d`: parse's problems, reported with its
// own); prints every problem on failure. `registry` (made for the
// manifest's plugin_path) must outlive the result: it caches the loaded
// plugins.
std::optional<ResolvedManifest> resolve(Manifest m, PluginRegistry& registry, Diagnostics& d,
                                        bool json) {
  auto r = resolve_manifest(std::move(m), registry, d);
  if (r && !d.empty()) r.reset();
  if (!r) print_diagnostics(d, json);
  return r;
}

// Both, in one pass: every problem is reported at once.
std::optional<ResolvedManifest> prepare(const std::string& path,
                                        const std::string& pin_root_override,
                                        std::unique_ptr<PluginRegistry>& registry,
                                        bool json) {
  Diagnostics d;
  auto m = parse_manifest_file(path, d);
  if (!m) {
    print_diagnostics(d, json);
    return std::nullopt;
  }
  if (!pin_root_override.empty()) m->pin_root = pin_root_override;
  registry = std::make_unique<PluginRegistry>(m->plugin_path);
  return resolve(std::move(*m), *registry, d, json);
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

// What `status --check` fails on, one line each: what is not as its load
// left it and needs the next load, unpin or a look at serve. Hooks this
// kernel lacks and degraded forms are how the instance was loaded, and
// other tools' pins are theirs: none of them is a problem.
nlohmann::json status_problems(const nlohmann::json& whole) {
  auto out = nlohmann::json::array();
  for (auto& s : whole.value("instances", nlohmann::json::array())) {
    auto name = s.value("instance", std::string("?"));
    if (s.value("missing", false)) continue;  // an error of its own (exit 1)
    if (s.contains("error")) out.push_back(name + ": " + s["error"].get<std::string>());
    if (s.contains("drift")) out.push_back(name + ": " + s["drift"].get<std::string>());
    if (s.contains("complete") && !s["complete"].get<bool>())
      out.push_back(name + ": its load did not finish; the next `bpfmgr load` completes it");
  }
  for (auto& l : whole.value("leftovers", nlohmann::json::array()))
    out.push_back("leftover " + l["name"].get<std::string>() + ": " + l["why"].get<std::string>());
  for (auto& i : whole.value("interrupted", nlohmann::json::array()))
    if (!i.value("left_alone", false))
      out.push_back("interrupted load of " + i["instance"].get<std::string>() + ": " +
                    i["next"].get<std::string>());
  if (whole.contains("serve")) {
    auto& sv = whole["serve"];
    auto who = "serve PID " + std::to_string(sv.value("pid", 0));
    if (!sv.value("starting", false) && !sv.value("ready", false))
      out.push_back(who + ": degraded, " + std::to_string(sv.value("up", 0)) + " of " +
                    std::to_string(sv.value("instances", 0)) + " instance(s) up");
    if (!sv.value("manifest_valid", true))
      out.push_back(who + ": its manifest has errors; what runs is kept");
  }
  return out;
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
                      {"degraded", degraded_json(i.kernel.degraded)}});
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
  Diagnostics d;
  auto m = parse_manifest_file(a.manifest, d);
  if (!m) {
    print_diagnostics(d, a.json);
    return kExitInvalid;
  }
  if (!a.pin_root_override.empty()) m->pin_root = a.pin_root_override;
  const std::string pin_root = m->pin_root;
  auto fail = [&](const std::string& what, const std::string& then, int code) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", what}, {"then", then}}.dump(2)
                << "\n";
    std::cerr << "error: " << what << "\n" << then << "\n";
    return code;
  };
  LoadOptions lo;
  lo.dry_run = a.dry_run;
  lo.reset_maps = a.reset_maps;
  lo.lock_wait = a.no_wait ? LockWait::Fail : LockWait::Block;
  PluginRegistry registry(m->plugin_path);
  LoadReport rep;
  try {
    // A reload with nothing to do is told from the records, without
    // loading a plugin; anything else resolves and loads in full.
    std::optional<LoadReport> unchanged;
    if (d.empty()) unchanged = unchanged_by_records(*m, registry, lo);
    if (unchanged) {
      rep = std::move(*unchanged);
    } else {
      auto r = resolve(std::move(*m), registry, d, a.json);
      if (!r) return kExitInvalid;
      rep = load_manifest(*r, lo);
    }
  } catch (const PinRootRefused& e) {
    return fail(e.what(), "nothing was done", kExitInvalid);
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
                                {"pin_root", pin_root},
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
  std::cout << "pinned under " << pin_root << "\n";
  return kExitOk;
}

int cmd_unpin(const UnpinArgs& a) {
  PluginRegistry registry;
  if (int rc = check_pin_root_access(a.pin_root, a.instances); rc != kExitOk) return rc;
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

// What interrupted loads and foreign entries left under the pin root.
void print_leftovers(const nlohmann::json& whole) {
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
}

// One instance: plugin, programs, maps, links, hooks, details, counters,
// metrics.
void print_instance(const nlohmann::json& s) {
  std::cout << "instance " << s["instance"].get<std::string>();
  if (s.contains("error")) {
    std::cout << ": " << s["error"].get<std::string>() << "\n\n";
    return;
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

}  // namespace

int cmd_status(const StatusArgs& a) {
  PluginRegistry registry;
  if (int rc = check_pin_root_access(a.pin_root, a.instances); rc != kExitOk) return rc;
  auto whole = pin_root_status(a.pin_root, a.instances, registry);
  // What a running serve could not apply (its own record, not a guess).
  if (auto sv = serve_state_for_status(a.pin_root, a.instances); !sv.is_null())
    whole["serve"] = sv;
  auto problems = whole["problems"] = status_problems(whole);
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
  if (a.check && !problems.empty() && rc == kExitOk) rc = kExitNotAsLoaded;
  if (a.json) {
    std::cout << whole.dump(2) << "\n";
    return rc;
  }
  if (whole.contains("serve")) print_serve_state(whole["serve"]);
  print_leftovers(whole);
  if (all.empty() && a.instances.empty())
    std::cout << "no instances under " << a.pin_root << "\n";
  for (auto& s : all)
    if (!s.value("missing", false)) print_instance(s);  // missing: said on stderr
  if (a.check)
    for (auto& p : problems) std::cerr << "not as loaded: " << p.get<std::string>() << "\n";
  return rc;
}

}  // namespace bpfmgr
