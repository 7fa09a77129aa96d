#include "commands.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "handles.hpp"
#include "loader.hpp"
#include "manifest.hpp"
#include "resolve.hpp"
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
  if (!r) print_diagnostics(d, json);
  return r;
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
                      {"options", options_to_json(i.options)}});
    std::cout << nlohmann::json{{"ok", true}, {"instances", inst}}.dump(2) << "\n";
  } else {
    std::cout << manifest << ": ok, " << r->instances.size()
              << " enabled instance(s)\n";
  }
  return kExitOk;
}

int cmd_load(const LoadArgs& a) {
  std::unique_ptr<PluginRegistry> registry;
  auto r = prepare(a.manifest, a.pin_root_override, registry, a.json);
  if (!r) return kExitInvalid;
  LoadReport rep;
  try {
    LoadOptions lo;
    lo.dry_run = a.dry_run;
    lo.reset_maps = a.reset_maps;
    lo.lock_wait = a.no_wait ? LockWait::Fail : LockWait::Block;
    rep = load_manifest(*r, lo);
  } catch (const LockBusy& e) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", e.what()},
                                  {"lock_holder", e.holder}}.dump(2) << "\n";
    std::cerr << "error: " << e.what() << "\nnothing was done (--no-wait)\n";
    return kExitFailed;
  } catch (const std::exception& e) {
    if (a.json)
      std::cout << nlohmann::json{{"ok", false}, {"error", e.what()}}.dump(2) << "\n";
    std::cerr << "error: " << e.what() << "\n"
              << "the load was rolled back; nothing it made is left\n";
    return kExitFailed;
  }
  if (a.json) {
    std::cout << nlohmann::json{{"ok", true},
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
  if (a.json)
    std::cout << nlohmann::json{{"ok", rep.ok()}, {"removed", rep.removed},
                                {"errors", rep.errors}}
                     .dump()
              << "\n";
  else if (!a.quiet || !rep.ok())
    std::cout << (rep.removed.empty() ? "nothing to unpin under " + a.pin_root
                                      : "unpinned: " + join(rep.removed))
              << "\n";
  if (!a.json)
    for (auto& e : rep.errors) std::cerr << "error: " << e << "\n";
  return rep.ok() ? kExitOk : kExitFailed;
}

int cmd_status(const std::string& pin_root, const std::vector<std::string>& instances,
               bool json) {
  PluginRegistry registry;
  auto names = instances.empty() ? list_instances(pin_root) : instances;
  auto all = nlohmann::json::array();
  for (auto& n : names) all.push_back(instance_status(pin_root, n, registry));
  if (json) {
    std::cout << nlohmann::json{{"pin_root", pin_root}, {"instances", all}}.dump(2)
              << "\n";
    return kExitOk;
  }
  if (all.empty()) {
    std::cout << "no instances under " << pin_root << "\n";
    return kExitOk;
  }
  for (auto& s : all) {
    std::cout << "instance " << s["instance"].get<std::string>();
    if (s.contains("error")) {
      std::cout << ": " << s["error"].get<std::string>() << "\n\n";
      continue;
    }
    std::cout << "  plugin " << s["plugin"].get<std::string>() << " "
              << s["plugin_version"].get<std::string>() << "  loaded "
              << s["loaded_at"].get<std::string>() << "\n"
              << "  manifest " << s["manifest"].get<std::string>() << "\n";
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
    if (s.contains("status_error"))
      std::cout << "  counters unavailable: " << s["status_error"].get<std::string>() << "\n";
    std::cout << "\n";
  }
  return kExitOk;
}

int cmd_plugins(const std::vector<std::string>& extra_dirs, bool json) {
  PluginRegistry registry(extra_dirs);
  auto arr = nlohmann::json::array();
  for (auto& [name, path] : registry.discover()) {
    nlohmann::json p{{"name", name}, {"path", path}};
    try {
      auto lp = registry.load_file(path);
      p["version"] = lp->info.version;
      p["api_version"] = to_string(lp->api);
      p["description"] = lp->info.description;
      p["has_bench"] = lp->plugin->has_bench();
      p["streams_events"] = lp->plugin->events_map().has_value();
      auto& opts = p["options"] = nlohmann::json::array();
      for (auto& o : lp->plugin->option_schema())
        opts.push_back({{"name", o.name}, {"type", option_type_name(o.type)},
                        {"description", o.description}});
    } catch (const std::exception& e) {
      p["error"] = e.what();
    }
    arr.push_back(p);
  }
  if (json) {
    std::cout << nlohmann::json{{"api_version", to_string(kPluginApiVersion)},
                                {"search_path", registry.search_dirs()},
                                {"plugins", arr}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << "plugin API " << to_string(kPluginApiVersion) << "; search path:\n";
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
    for (auto& o : p["options"])
      std::printf("           option %-18s %s: %s\n", o["name"].get<std::string>().c_str(),
                  o["type"].get<std::string>().c_str(),
                  o["description"].get<std::string>().c_str());
  }
  return kExitOk;
}

// ------------------------------------------------------------------ events

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct EventSink {
  EventFormatter* formatter;
  EventFormat format;
  long seen = 0;
  long limit = 0;
};

// Takes the lock file at `path` without waiting; an invalid Fd if another
// process holds it. The holder unlinks the file when it is done, so after
// locking, the path must still name the locked file: otherwise the lock was
// won on a file already removed, and the attempt starts over.
Fd lock_reader(const std::string& path) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return Fd();
    struct stat held {}, named {};
    if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino)
      return fd;
  }
  return Fd();
}

int on_record(void* ctx, void* data, size_t size) {
  auto* sink = static_cast<EventSink*>(ctx);
  auto line = sink->formatter->format(
      std::span<const std::byte>(static_cast<const std::byte*>(data), size),
      sink->format);
  if (!line.empty()) {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    ++sink->seen;
  }
  // A negative return stops ring_buffer__poll early once we have enough.
  return (sink->limit > 0 && sink->seen >= sink->limit) ? -1 : 0;
}
}  // namespace

int cmd_events(const EventsArgs& a) {
  auto dir = a.pin_root + "/" + a.instance;
  auto st = read_state(dir);
  if (!st) {
    std::cerr << "error: no instance '" << a.instance << "' under " << a.pin_root
              << " (load it first with `bpfmgr load`)\n";
    return kExitFailed;
  }
  PluginRegistry registry;
  std::shared_ptr<LoadedPlugin> plugin;
  try {
    plugin = registry.load_file(st->plugin_path);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  auto map = plugin->plugin->events_map();
  if (!map) {
    std::cerr << "error: plugin '" << st->plugin << "' does not stream events\n";
    return kExitInvalid;
  }
  auto ctx = open_pinned(a.pin_root, a.instance, *st, *plugin->plugin);
  auto formatter = plugin->plugin->event_formatter(ctx->options());
  if (!formatter) {
    std::cerr << "error: plugin '" << st->plugin << "' has no event formatter\n";
    return kExitInvalid;
  }
  int fd;
  try {
    fd = ctx->map_fd(*map);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  // A ring buffer has one consumer position: two readers would each see
  // only part of the records. One reader per map, enforced with a lock
  // file named after the map's id (bpffs pins cannot be locked).
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &info_len) != 0) {
    std::cerr << "error: cannot inspect ring buffer: " << errno_text(errno) << "\n";
    return kExitFailed;
  }
  ::mkdir("/run/bpfmgr", 0755);
  auto lock_path = "/run/bpfmgr/events-map-" + std::to_string(info.id) + ".lock";
  Fd lock = lock_reader(lock_path);
  if (!lock) {
    std::cerr << "error: another `bpfmgr events` is reading instance '" << a.instance
              << "' (ring buffer map id " << info.id
              << "); a second reader would split the records between the two\n";
    return kExitFailed;
  }
  // The holder removes the lock file, so none pile up in /run.
  struct RemoveLockFile {
    const std::string& path;
    ~RemoveLockFile() { ::unlink(path.c_str()); }
  } remove_lock_file{lock_path};
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
    std::cout << formatter->table_header() << "\n";
    std::fflush(stdout);
  }
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration<double>(a.duration_s);
  while (!g_stop) {
    int n = ring_buffer__poll(rb.get(), 100);
    if (n < 0 && n != -EINTR) break;  // -1 from on_record: limit reached
    if (a.count > 0 && sink.seen >= a.count) break;
    if (a.duration_s > 0 && std::chrono::steady_clock::now() >= deadline) break;
  }
  return kExitOk;
}

}  // namespace bpfmgr
