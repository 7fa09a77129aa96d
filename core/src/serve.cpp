#include "serve.hpp"

#include <bpf/bpf.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "commands.hpp"
#include "file_watch.hpp"
#include "handles.hpp"
#include "loader.hpp"
#include "manifest.hpp"
#include "metrics.hpp"
#include "pin_layout.hpp"
#include "pinned.hpp"
#include "resolve.hpp"
#include "pin_root_lock.hpp"
#include "system.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A manifest as parsed and resolved, with the registry its plugins live in.
struct Desired {
  std::string text;
  std::unique_ptr<PluginRegistry> registry;
  std::optional<ResolvedManifest> resolved;
  std::vector<std::string> instance_names() const {
    std::vector<std::string> v;
    for (auto& i : resolved->instances) v.push_back(i.spec->name);
    return v;
  }
};

// The HTTP side: read-only /metrics and /healthz on a thread of its own.
class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  using Healthy = std::function<bool()>;
  MetricsServer(const std::string& address, Render render, Healthy healthy) {
    auto [host, port] = parse_listen_address(address);
    // Scrapes are rare and serialised anyway: two workers are plenty.
    server_.new_task_queue = [] { return new httplib::ThreadPool(2); };
    server_.Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
      res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    server_.Get("/healthz", [healthy](const httplib::Request&, httplib::Response& res) {
      bool ok = healthy();
      res.status = ok ? 200 : 503;
      res.set_content(ok ? "ok\n" : "reconcile loop stalled\n", "text/plain");
    });
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("bpfmgr serve: /metrics (Prometheus), /healthz\n", "text/plain");
    });
    if (!server_.bind_to_port(host.c_str(), port))
      throw Error("cannot listen on " + address + " for metrics: " +
                  errno_text(errno) + " (another process on that port? "
                  "--metrics-address chooses another, `none` turns it off)");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    spdlog::info("metrics on http://{}/metrics", address);
  }
  ~MetricsServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  httplib::Server server_;
  std::thread thread_;
};

class Server {
 public:
  explicit Server(const ServeArgs& a) : args_(a) {}
  int run();

 private:
  // Parses and resolves the manifest file; on failure logs every problem
  // with file:line:column and counts a manifest error.
  std::optional<Desired> read_manifest(const std::string& text);
  // One pass: re-read the manifest, observe, repair. Never throws.
  void reconcile(const char* trigger, bool force_reread);
  bool apply(const Desired& d, const std::map<std::string, std::vector<std::string>>& drift);
  bool unpin_managed();  // false when something could not be removed
  std::string render();
  bool healthy() const;

  ServeArgs args_;
  std::string pin_root_;
  std::optional<Desired> desired_;       // last valid manifest
  std::string last_seen_text_;           // last text read, valid or not
  // Instances the last successful apply made: only these can drift (one
  // just added to the manifest is missing, not drifted).
  std::set<std::string> applied_;
  // The manifest changed (or SIGHUP) and has not been applied yet: a failed
  // apply is retried every interval until it commits.
  bool apply_pending_ = false;
  bool last_seen_valid_ = true;

  mutable std::mutex stats_mutex_;
  ServeStats stats_;
  std::atomic<std::int64_t> heartbeat_ns_{0};

  std::mutex render_mutex_;
  PluginRegistry scrape_registry_;
};

std::optional<Desired> Server::read_manifest(const std::string& text) {
  Diagnostics d;
  auto dir = fs::absolute(args_.manifest).lexically_normal().parent_path().string();
  auto m = parse_manifest_text(text, args_.manifest, dir, d);
  std::optional<Desired> out;
  if (m) {
    m->absolute_path = fs::absolute(args_.manifest).lexically_normal().string();
    if (!args_.pin_root_override.empty()) m->pin_root = args_.pin_root_override;
    if (!pin_root_.empty() && m->pin_root != pin_root_)
      d.error(m->pin_root_pos,
              "pin_root changed from " + pin_root_ + " to " + m->pin_root +
                  " while serving",
              "restart `bpfmgr serve` to move to another pin root");
    auto registry = std::make_unique<PluginRegistry>(m->plugin_path);
    auto r = resolve_manifest(std::move(*m), *registry, d);
    if (r && d.empty()) out = Desired{text, std::move(registry), std::move(r)};
  }
  if (!out) {
    // The same file:line:column lines `bpfmgr load` prints.
    std::cerr << d.format() << std::flush;
    spdlog::error("{}: {} error(s); keeping what runs as it is", args_.manifest,
                  d.items().size());
    std::lock_guard g(stats_mutex_);
    ++stats_.manifest_errors;
    stats_.manifest_valid = false;
  }
  return out;
}

// The reason label for what `bpfmgr status` says is wrong with a link.
std::string link_reason(const std::string& problem) {
  if (problem.find("link pin is missing") != std::string::npos) return "link_pin_missing";
  if (problem.find("cgroup was removed") != std::string::npos) return "cgroup_removed";
  if (problem.find("program's pin") != std::string::npos) return "prog_pin_missing";
  if (problem.find("runs program id") != std::string::npos) return "link_replaced";
  return "link_detached";
}

std::map<std::string, std::vector<std::string>> drift_of(
    const std::string& pin_root, const std::vector<std::string>& instances,
    PluginRegistry& registry) {
  std::map<std::string, std::vector<std::string>> out;
  if (instances.empty()) return out;
  // The same observation `bpfmgr status` makes: records, pins, and what the
  // kernel runs (link attached, running the pinned program).
  auto observed = pin_root_status(pin_root, instances, registry);
  std::map<std::string, std::set<std::string>> reasons;
  for (auto& s : observed["instances"]) {
    auto name = s["instance"].get<std::string>();
    auto& r = reasons[name];
    if (s.contains("error")) {
      // Gone (a reboot, rm -r) or a corrupt record: a load recreates it.
      // A directory that is not bpfmgr's is left to the load to refuse.
      if (s.value("missing", false) || s["error"].get<std::string>().find("not bpfmgr's") ==
                                           std::string::npos)
        r.insert("instance_missing");
      continue;
    }
    if (!s.value("complete", false)) r.insert("instance_missing");
    for (auto& l : s["links"])
      if (l.contains("error")) r.insert(link_reason(l["error"].get<std::string>()));
    for (auto& p : s["programs"])
      if (p.contains("error")) r.insert("prog_pin_missing");
    for (auto& m : s["maps"])
      if (m.contains("error")) r.insert("map_pin_missing");
    if (s.contains("drift") && r.empty()) r.insert("attachment_missing");
  }
  for (auto& i : observed["interrupted"]) reasons[i["instance"].get<std::string>()].insert("staging_left");
  for (auto& [name, r] : reasons)
    if (!r.empty()) out[name].assign(r.begin(), r.end());
  return out;
}

bool Server::apply(const Desired& d,
                   const std::map<std::string, std::vector<std::string>>& drift) {
  auto t0 = Clock::now();
  bool ok = false;
  LoadReport rep;
  try {
    LoadOptions options;
    // serve reads TERM/INT/HUP from its signalfd after the step: a load
    // in progress always finishes (commits or rolls back by itself).
    options.catch_signals = false;
    rep = load_manifest(*d.resolved, options);
    ok = true;
  } catch (const std::exception& e) {
    spdlog::error("apply failed, rolled back: {}", e.what());
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::set<std::string> reloaded(rep.loaded.begin(), rep.loaded.end());
  reloaded.insert(rep.updated.begin(), rep.updated.end());
  std::lock_guard g(stats_mutex_);
  stats_.apply_duration.observe(secs);
  ++stats_.applies[ok ? "ok" : "failed"];
  stats_.last_apply_timestamp = unix_now();
  stats_.last_apply_ok = ok;
  if (!ok) return false;
  std::error_code ec;
  for (auto& [inst, reasons] : drift)
    for (auto& r : reasons) {
      // Staging is cleared by every load; other drift is repaired when the
      // load replaced the instance.
      bool repaired = r == "staging_left"
                          ? !fs::exists(PinLayout(pin_root_).staging(inst).dir, ec)
                          : reloaded.count(inst) > 0;
      if (repaired) {
        ++stats_.repairs[r];
        spdlog::warn("{}: repaired ({})", inst, r);
      } else {
        spdlog::warn("{}: drift ({}) not repaired by the load", inst, r);
      }
    }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  spdlog::info("applied in {:.3f}s: loaded [{}] updated [{}] unchanged [{}] removed [{}]",
               secs, list(rep.loaded), list(rep.updated), list(rep.unchanged),
               list(rep.removed));
  return true;
}

void Server::reconcile(const char* trigger, bool force_reread) {
  try {
    auto text = read_file(args_.manifest);
    bool changed = false;
    if (!text) {
      if (force_reread || last_seen_valid_ || !last_seen_text_.empty()) {
        spdlog::error("{}: cannot read manifest: {}; keeping what runs as it is",
                      args_.manifest, errno_text(errno));
        std::lock_guard g(stats_mutex_);
        ++stats_.manifest_errors;
        stats_.manifest_valid = false;
      }
      last_seen_text_.clear();
      last_seen_valid_ = false;
    } else if (force_reread || *text != last_seen_text_) {
      last_seen_text_ = *text;
      auto d = read_manifest(*text);
      last_seen_valid_ = d.has_value();
      if (d && (!desired_ || desired_->text != d->text || force_reread)) {
        changed = !desired_ || desired_->text != d->text || force_reread;
        desired_ = std::move(d);
        std::lock_guard g(stats_mutex_);
        stats_.manifest_valid = true;
        stats_.managed_instances = desired_->instance_names();
      } else if (d) {
        std::lock_guard g(stats_mutex_);
        stats_.manifest_valid = true;
      }
    }
    if (desired_) {
      std::vector<std::string> watched;
      for (auto& n : desired_->instance_names())
        if (applied_.count(n)) watched.push_back(n);
      auto drift = drift_of(pin_root_, watched, *desired_->registry);
      // At start, what is missing is loaded, not repaired: the first apply
      // counts no repairs.
      bool start = std::string(trigger) == "start";
      if (start) drift.clear();
      for (auto& [inst, reasons] : drift)
        for (auto& r : reasons) spdlog::warn("{}: drift: {}", inst, r);
      if (changed) apply_pending_ = true;
      if ((start || apply_pending_ || !drift.empty()) && apply(*desired_, drift)) {
        auto names = desired_->instance_names();
        applied_ = {names.begin(), names.end()};
        apply_pending_ = false;
      }
    }
    std::lock_guard g(stats_mutex_);
    ++stats_.reconciles[trigger];
    stats_.last_reconcile_timestamp = unix_now();
  } catch (const std::exception& e) {
    spdlog::error("reconcile ({}) failed: {}", trigger, e.what());
  }
  heartbeat_ns_ = Clock::now().time_since_epoch().count();
}

bool Server::unpin_managed() {
  if (!desired_) return true;
  PluginRegistry registry;
  // Only what this manifest loaded: an instance of the same name loaded by
  // hand from another manifest is not ours to remove.
  std::vector<std::string> ours;
  for (auto& name : desired_->instance_names())
    if (auto st = read_state(PinLayout(pin_root_).instance(name).state());
        st && st->manifest_path == desired_->resolved->manifest.absolute_path)
      ours.push_back(name);
  if (ours.empty()) return true;
  auto rep = unpin(pin_root_, ours, registry);
  for (auto& e : rep.errors) spdlog::error("unpin: {}", e);
  for (auto& n : rep.removed) spdlog::info("{}: unpinned (--unpin-on-exit)", n);
  return rep.ok();
}

std::string Server::render() {
  ServeStats copy;
  {
    std::lock_guard g(stats_mutex_);
    copy = stats_;
  }
  std::lock_guard g(render_mutex_);
  return render_metrics(pin_root_, copy, scrape_registry_);
}

bool Server::healthy() const {
  // The loop wakes at least every interval; three missed wakes (or a load
  // stuck for 90 s) mean it is stuck.
  auto limit = std::chrono::duration<double>(std::max(3 * args_.interval_s, 90.0));
  auto last = Clock::time_point(Clock::duration(heartbeat_ns_.load()));
  return Clock::now() - last < limit;
}

int Server::run() {
  if (args_.interval_s <= 0) {
    std::cerr << "error: --interval must be positive\n";
    return kExitInvalid;
  }
  // Signals are read from a signalfd in the loop, so that a TERM arriving in
  // the middle of a load is seen only after it committed or rolled back.
  // Blocked before any thread starts, they stay blocked in all of them.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  Fd sigfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd) throw Error("signalfd: " + errno_text(errno));

  auto text = read_file(args_.manifest);
  if (!text) {
    std::cerr << "error: cannot read " << args_.manifest << ": " << errno_text(errno) << "\n";
    return kExitInvalid;
  }
  last_seen_text_ = *text;
  desired_ = read_manifest(*text);
  if (!desired_) return kExitInvalid;
  pin_root_ = desired_->resolved->manifest.pin_root;
  stats_.manifest_path = desired_->resolved->manifest.absolute_path;
  stats_.managed_instances = desired_->instance_names();

  // One serve per pin root, for as long as it runs. Loads take the "state"
  // lock themselves, and only while they change something.
  std::optional<PinRootLock> serve_lock;
  try {
    serve_lock.emplace(PinRootLock::acquire(pin_root_, LockWait::Fail, "serve"));
  } catch (const LockBusy& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }

  Fd stats_fd;
  if (args_.enable_bpf_stats) {
    // Run counters accrue while any process holds this fd open.
    stats_fd = Fd(bpf_enable_stats(BPF_STATS_RUN_TIME));
    if (!stats_fd) throw Error("cannot enable BPF run-time stats: " + errno_text(errno));
    spdlog::info("BPF run-time statistics enabled while serve runs");
    stats_.bpf_stats_held = true;
  }

  FileWatch watch(args_.manifest);
  heartbeat_ns_ = Clock::now().time_since_epoch().count();
  std::unique_ptr<MetricsServer> http;
  if (args_.metrics_address != "none")
    http = std::make_unique<MetricsServer>(
        args_.metrics_address, [this] { return render(); }, [this] { return healthy(); });

  reconcile("start", false);
  {
    std::lock_guard g(stats_mutex_);
    if (!stats_.last_apply_ok) {
      std::cerr << "error: the first apply of " << args_.manifest
                << " failed; nothing was changed\n";
      return kExitFailed;
    }
  }
  sd_notifyf(0, "READY=1\nSTATUS=serving %s (%zu instance(s))", args_.manifest.c_str(),
             desired_->instance_names().size());

  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(args_.interval_s));
  auto next = Clock::now() + interval;
  bool stop = false;
  while (!stop) {
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now())
                       .count();
    pollfd fds[2] = {{sigfd.get(), POLLIN, 0}, {watch.fd(), POLLIN, 0}};
    int n = ::poll(fds, 2, static_cast<int>(std::max<long long>(wait_ms, 0)));
    if (n < 0 && errno != EINTR) throw Error("poll: " + errno_text(errno));
    const char* trigger = nullptr;
    bool force = false;
    if (n > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo si{};
      while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGHUP) {
          spdlog::info("SIGHUP: re-reading {}", args_.manifest);
          trigger = "signal";
          force = true;
        } else {
          spdlog::info("signal {}: stopping", si.ssi_signo == SIGTERM ? "TERM" : "INT");
          stop = true;
        }
      }
    }
    if (stop) break;
    if (!trigger && n > 0 && (fds[1].revents & POLLIN) && watch.drain()) {
      // Editors and ConfigMap updates come as bursts: let one settle.
      pollfd w{watch.fd(), POLLIN, 0};
      while (::poll(&w, 1, 100) > 0) watch.drain();
      auto now_text = read_file(args_.manifest);
      if (now_text.value_or("") != last_seen_text_ || !now_text) trigger = "file";
    }
    if (!trigger && Clock::now() >= next) trigger = "interval";
    if (!trigger) {
      heartbeat_ns_ = Clock::now().time_since_epoch().count();
      continue;
    }
    reconcile(trigger, force);
    next = Clock::now() + interval;
    std::lock_guard g(stats_mutex_);
    sd_notifyf(0, "STATUS=serving %s; last apply %s", args_.manifest.c_str(),
               stats_.last_apply_ok ? "ok" : "failed");
  }
  sd_notify(0, "STOPPING=1");
  http.reset();
  if (args_.unpin_on_exit && !unpin_managed()) return kExitFailed;
  spdlog::info("stopped; {}", args_.unpin_on_exit ? "managed instances unpinned"
                                                   : "programs keep running");
  return kExitOk;
}

}  // namespace

std::pair<std::string, int> parse_listen_address(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    throw Error("metrics address '" + address + "' is not HOST:PORT");
  auto host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    std::size_t used = 0;
    port = std::stoi(address.substr(colon + 1), &used);
    if (used != address.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535)
    throw Error("metrics address '" + address + "': port must be 1-65535");
  return {host, port};
}

std::map<std::string, std::vector<std::string>> find_drift(
    const std::string& pin_root, const std::vector<std::string>& instances) {
  PluginRegistry registry;
  return drift_of(pin_root, instances, registry);
}

int cmd_serve(const ServeArgs& args) {
  try {
    Server s(args);
    return s.run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace bpfmgr
