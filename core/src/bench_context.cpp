// `bpfmgr bench PLUGIN`: runs a plugin's own benchmark, giving it a way to
// load manifests through the real core under private pin roots.
#include <unistd.h>

#include <atomic>
#include <iostream>

#include "commands.hpp"
#include "loader.hpp"
#include "system.hpp"

namespace bpfmgr {

namespace {

class LoadedGuard final : public BenchHost::Loaded {
 public:
  explicit LoadedGuard(std::string pin_root) : pin_root_(std::move(pin_root)) {}
  ~LoadedGuard() override {
    PluginRegistry registry;
    try {
      auto rep = unpin(pin_root_, {}, registry);
      for (auto& e : rep.errors) std::cerr << "bench: " << e << "\n";
    } catch (const std::exception& e) {
      std::cerr << "bench: cannot unpin " << pin_root_ << ": " << e.what() << "\n";
    }
  }
  const std::string& pin_root() const override { return pin_root_; }

 private:
  std::string pin_root_;
};

class BenchHostImpl final : public BenchHost {
 public:
  const std::string& cgroup2_root() const override { return ::bpfmgr::cgroup2_root(); }

  std::unique_ptr<Loaded> load(const std::string& manifest_toml) override {
    static std::atomic<int> counter{0};
    Diagnostics d;
    auto m = parse_manifest_text(manifest_toml, "<bench manifest>", ".", d);
    if (!m || !d.empty()) throw Error("bench manifest: " + d.format());
    m->pin_root = "/sys/fs/bpf/bpfmgr-bench-" + std::to_string(::getpid()) + "-" +
                  std::to_string(counter++);
    PluginRegistry registry(m->plugin_path);
    auto r = resolve_manifest(std::move(*m), registry, d);
    if (!r) throw Error("bench manifest: " + d.format());
    auto guard = std::make_unique<LoadedGuard>(r->manifest.pin_root);
    load_manifest(*r, {});
    return guard;
  }
};

}  // namespace

int cmd_bench(const std::string& plugin_name, const std::vector<std::string>& args) {
  PluginRegistry registry;
  std::shared_ptr<LoadedPlugin> plugin;
  try {
    plugin = registry.load(plugin_name);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitInvalid;
  }
  if (!plugin->plugin->has_bench()) {
    std::cerr << "error: plugin '" << plugin_name << "' has no benchmark\n";
    return kExitInvalid;
  }
  ensure_bpffs();
  ensure_tracefs();
  BenchHostImpl host;
  try {
    return plugin->plugin->bench(host, args);
  } catch (const std::exception& e) {
    std::cerr << "error: bench " << plugin_name << ": " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace bpfmgr
