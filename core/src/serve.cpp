#include "serve.hpp"

#include <bpf/bpf.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
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
#include "log_limit.hpp"
#include "manifest.hpp"
#include "metrics.hpp"
#include "pin_layout.hpp"
#include "pinned.hpp"
#include "record_json.hpp"
#include "pin_root_lock.hpp"
#include "resolve.hpp"
#include "sd_notify.hpp"
#include "errno_text.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// How soon an instance that cannot be applied is tried again (or the
// interval, when shorter).
constexpr double kRetrySeconds = 5;
// /healthz fails after this long without a pass or an idle wake-up.
constexpr double kStalledSeconds = 120;

// The inode of this process's PID namespace: a record's PID means the same
// process to a reader only in the same namespace (a DaemonSet's serve
// shares /run/bpfmgr with the host, not its PIDs).
std::uint64_t pid_namespace() {
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
}

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
  std::optional<ResolvedManifest> resolved;  // the instances that resolved
  // Instances of the manifest left out of `resolved`, and why.
  std::map<std::string, std::string> failing;
  std::vector<std::string> instance_names() const {  // resolved ones
    std::vector<std::string> v;
    for (auto& i : resolved->instances) v.push_back(i.spec->name);
    return v;
  }
  std::vector<std::string> all_names() const {  // every enabled instance
    auto v = instance_names();
    for (auto& [n, why] : failing) v.push_back(n);
    return v;
  }
};

// The HTTP side: one event-loop thread owns every connection, so a client
// that sends a byte a second costs a file descriptor, not a worker. Each
// request must arrive whole within kHeaderTimeout of the connection's
// accept (a slow-loris client is cut off), responses are written within
// kWriteTimeout, and at most kMaxConnections are open: a new connection
// past that closes the oldest one still sending its request. /healthz and
// /readyz are answered on the loop itself from values the reconcile loop
// publishes; /metrics is rendered on a worker thread of its own, so no
// scrape (however slow) delays a probe. One request per connection
// (`Connection: close`). The socket is bound without SO_REUSEPORT: a second
// serve on the same address fails to start, naming it.
class HttpServer {
 public:
  struct Reply {
    int status = 200;
    std::string body;
    std::string type = "text/plain; charset=utf-8";
  };
  using Handler = std::function<Reply()>;
  static constexpr std::size_t kMaxConnections = 256;
  static constexpr std::size_t kMaxRequestBytes = 8192;
  static constexpr auto kHeaderTimeout = std::chrono::seconds(5);
  static constexpr auto kWriteTimeout = std::chrono::seconds(10);

  // `inline_routes` run on the event loop (must be quick and never block);
  // `worker_routes` on the worker thread.
  HttpServer(const std::string& address, std::map<std::string, Handler> inline_routes,
             std::map<std::string, Handler> worker_routes)
      : inline_(std::move(inline_routes)), worker_routes_(std::move(worker_routes)) {
    auto [host, port] = parse_listen_address(address);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    auto port_s = std::to_string(port);
    if (int rc = ::getaddrinfo(host.c_str(), port_s.c_str(), &hints, &res); rc != 0)
      throw Error("metrics address '" + address + "': " + ::gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
    listen_ = Fd(::socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listen_) throw Error("socket: " + errno_text(errno));
    // SO_REUSEADDR only lets us rebind past TIME_WAIT; on Linux it never
    // lets two sockets listen on one address (SO_REUSEPORT would).
    int one = 1;
    ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listen_.get(), res->ai_addr, res->ai_addrlen) != 0 ||
        ::listen(listen_.get(), 128) != 0)
      throw Error("cannot listen on " + address + " for metrics: " + errno_text(errno) +
                  (errno == EADDRINUSE ? " (another bpfmgr serve, or another program, "
                                         "listens there; --metrics-address chooses "
                                         "another, `none` turns it off)"
                                       : ""));
    loopback_ = is_loopback(res->ai_addr);
    wake_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) throw Error("eventfd: " + errno_text(errno));
    loop_ = std::thread([this] { event_loop(); });
    worker_ = std::thread([this] { work(); });
  }
  ~HttpServer() {
    {
      std::lock_guard g(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    poke();
    if (loop_.joinable()) loop_.join();
    if (worker_.joinable()) worker_.join();
  }
  bool loopback() const { return loopback_; }

 private:
  using Clock = std::chrono::steady_clock;
  enum class Phase { Reading, Waiting, Writing };
  struct Conn {
    Fd fd;
    Phase phase = Phase::Reading;
    Clock::time_point accepted, deadline;
    std::string in, out;
    std::size_t written = 0;
  };

  static bool is_loopback(const sockaddr* sa) {
    if (sa->sa_family == AF_INET)
      return (ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
      auto& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
      return IN6_IS_ADDR_LOOPBACK(&a) ||
             (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
    }
    return false;
  }

  void poke() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
  }

  static const char* reason(int status) {
    switch (status) {
      case 200: return "OK";
      case 400: return "Bad Request";
      case 404: return "Not Found";
      case 405: return "Method Not Allowed";
      case 408: return "Request Timeout";
      case 431: return "Request Header Fields Too Large";
      case 503: return "Service Unavailable";
      default: return "Error";
    }
  }

  static void respond(Conn& c, const Reply& r, bool head) {
    c.out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
            "\r\nContent-Type: " + r.type + "\r\nContent-Length: " +
            std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n";
    if (!head) c.out += r.body;
    c.written = 0;
    c.phase = Phase::Writing;
    c.deadline = Clock::now() + kWriteTimeout;
  }

  // A complete request head in c.in: route it.
  void dispatch(std::uint64_t id, Conn& c) {
    auto line_end = c.in.find_first_of("\r\n");
    std::istringstream line(c.in.substr(0, line_end));
    std::string method, target, version;
    line >> method >> target >> version;
    if (method.empty() || target.empty() || version.rfind("HTTP/", 0) != 0)
      return respond(c, {400, "bad request\n"}, false);
    bool head = method == "HEAD";
    if (method != "GET" && !head) return respond(c, {405, "only GET\n"}, false);
    auto path = target.substr(0, target.find('?'));
    if (auto it = inline_.find(path); it != inline_.end()) return respond(c, it->second(), head);
    if (worker_routes_.count(path)) {
      c.phase = Phase::Waiting;
      {
        std::lock_guard g(mutex_);
        jobs_.push_back({id, path, head});
      }
      cv_.notify_one();
      return;
    }
    respond(c, {404, "not found: /metrics, /healthz, /readyz\n"}, head);
  }

  void event_loop() {
    std::map<std::uint64_t, Conn> conns;
    std::uint64_t next_id = 1;
    for (;;) {
      {
        std::lock_guard g(mutex_);
        if (stopping_) return;
        for (auto& d : done_)
          if (auto it = conns.find(d.id); it != conns.end())
            respond(it->second, d.reply, d.head);
        done_.clear();
      }
      auto now = Clock::now();
      for (auto it = conns.begin(); it != conns.end();) {
        auto& c = it->second;
        if (c.phase != Phase::Waiting && now >= c.deadline) {
          if (c.phase == Phase::Reading) {
            // A last word for a client that is only slow, not hostile.
            static const char kTimeout[] =
                "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                "Content-Length: 0\r\n\r\n";
            [[maybe_unused]] auto n = ::send(c.fd.get(), kTimeout, sizeof kTimeout - 1,
                                             MSG_DONTWAIT | MSG_NOSIGNAL);
          }
          it = conns.erase(it);
        } else {
          ++it;
        }
      }
      std::vector<pollfd> fds{{listen_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      std::vector<std::uint64_t> ids;
      auto next_deadline = now + std::chrono::seconds(60);
      for (auto& [id, c] : conns) {
        if (c.phase == Phase::Waiting) continue;
        fds.push_back({c.fd.get(), short(c.phase == Phase::Reading ? POLLIN : POLLOUT), 0});
        ids.push_back(id);
        next_deadline = std::min(next_deadline, c.deadline);
      }
      auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now).count();
      int n = ::poll(fds.data(), fds.size(), int(std::max<long long>(wait_ms, 0)));
      if (n < 0 && errno != EINTR) {
        spdlog::error("metrics endpoint: poll: {}", errno_text(errno));
        return;
      }
      if (n <= 0) continue;
      if (fds[1].revents & POLLIN) {
        std::uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
      }
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto it = conns.find(ids[i - 2]);
        auto& c = it->second;
        if (c.phase == Phase::Reading) {
          char buf[4096];
          ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
          if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
            conns.erase(it);
            continue;
          }
          if (got < 0) continue;
          c.in.append(buf, std::size_t(got));
          if (c.in.find("\r\n\r\n") != std::string::npos ||
              c.in.find("\n\n") != std::string::npos)
            dispatch(it->first, c);
          else if (c.in.size() > kMaxRequestBytes)
            respond(c, {431, "request too large\n"}, false);
        } else if (c.phase == Phase::Writing) {
          ssize_t put = ::send(c.fd.get(), c.out.data() + c.written, c.out.size() - c.written,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
          if (put < 0 && (errno == EAGAIN || errno == EINTR)) continue;
          if (put < 0 || (c.written += std::size_t(put)) == c.out.size()) {
            ::shutdown(c.fd.get(), SHUT_WR);
            conns.erase(it);
          }
        }
      }
      if (fds[0].revents & POLLIN) {
        for (;;) {
          Fd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
          if (!fd) break;  // EAGAIN, or out of descriptors: retried next turn
          if (conns.size() >= kMaxConnections) {
            // Full: drop whichever connection has been sending its request
            // the longest; a prober's fresh connection always gets in.
            auto oldest = conns.end();
            for (auto c = conns.begin(); c != conns.end(); ++c)
              if (c->second.phase == Phase::Reading &&
                  (oldest == conns.end() || c->second.accepted < oldest->second.accepted))
                oldest = c;
            if (oldest == conns.end()) continue;  // all busy answering: refuse
            conns.erase(oldest);
          }
          auto t = Clock::now();
          Conn c;
          c.fd = std::move(fd);
          c.accepted = t;
          c.deadline = t + kHeaderTimeout;
          conns.emplace(next_id++, std::move(c));
        }
      }
    }
  }

  // Renders worker routes; requests for the same page waiting together are
  // answered by one rendering.
  void work() {
    for (;;) {
      std::vector<Job> batch;
      {
        std::unique_lock g(mutex_);
        cv_.wait(g, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        batch.swap(jobs_);
      }
      std::map<std::string, Reply> rendered;
      for (auto& j : batch)
        if (!rendered.count(j.path)) {
          try {
            rendered[j.path] = worker_routes_.at(j.path)();
          } catch (const std::exception& e) {
            rendered[j.path] = Reply{503, std::string("error: ") + e.what() + "\n"};
          }
        }
      {
        std::lock_guard g(mutex_);
        for (auto& j : batch) done_.push_back({j.id, rendered[j.path], j.head});
      }
      poke();
    }
  }

  struct Job {
    std::uint64_t id;
    std::string path;
    bool head;
  };
  struct Done {
    std::uint64_t id;
    Reply reply;
    bool head;
  };
  std::map<std::string, Handler> inline_, worker_routes_;
  Fd listen_, wake_;
  bool loopback_ = false;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<Job> jobs_;
  std::vector<Done> done_;
  std::thread loop_, worker_;
};

// Per instance, why it is not up (empty: it is): what /readyz, STATUS=
// and the metrics report. Published by the reconcile loop.
struct Readiness {
  bool first_apply_done = false;
  bool manifest_valid = true;
  std::size_t instances = 0;
  std::map<std::string, std::string> problems;  // instance -> why
};

class Server {
 public:
  explicit Server(const ServeArgs& a) : args_(a) {}
  int run();

 private:
  // Parses and resolves the manifest file. Problems of one instance (its
  // cgroup missing, an option the plugin refuses) leave it out of the
  // result and in Desired::failing; problems of the manifest as a whole
  // (TOML syntax, pin_root, ...) give nullopt. Both are logged with
  // file:line:column and counted as manifest errors.
  std::optional<Desired> read_manifest(const std::string& text);
  // One pass: re-read the manifest, observe, repair. Never throws.
  void reconcile(const char* trigger, bool force_reread);
  void apply(const Desired& d, const std::map<std::string, std::vector<std::string>>& drift);
  // Loads one instance on its own: no other instance is touched or removed.
  std::optional<std::string> apply_one(const Desired& d, const ResolvedInstance& ri,
                                       LoadReport& report);
  void remove_dropped(const Desired& d);
  void publish_readiness(const std::map<std::string, std::vector<std::string>>& drift_left);
  void watch_pins();
  bool unpin_managed();  // false when something could not be removed
  std::string render();
  bool healthy() const;
  HttpServer::Reply readyz() const;
  std::string status_line() const;
  // The /metrics, /healthz and /readyz listener (nullptr: --metrics-address none).
  std::unique_ptr<HttpServer> start_http();
  // Waits until `next` or an event; what calls for a reconcile ("signal",
  // "file", "drift", "interval"), nullptr when nothing did, and `stop` set
  // on TERM or INT. `force`: SIGHUP asks to re-read an unchanged file.
  const char* wait_for_trigger(int sigfd, FileWatch& watch, Clock::time_point next,
                               bool& force, bool& stop);

  ServeArgs args_;
  std::string pin_root_;
  std::optional<Desired> desired_;       // last valid manifest
  std::string last_seen_text_;           // last text read, valid or not
  // Instances the last apply made or kept: only these can drift (one just
  // added to the manifest is missing, not drifted).
  std::set<std::string> applied_;
  // Instances of desired_ whose last apply failed, and why.
  std::map<std::string, std::string> apply_failed_;
  // The manifest changed (or SIGHUP) and has not been applied yet: a failed
  // apply is retried until it commits.
  bool apply_pending_ = false;
  bool last_seen_valid_ = true;
  std::unique_ptr<DirWatch> pin_watch_;
  // Lines about what keeps failing (retried every 5 s) are logged on change
  // and then at a backoff; the metrics count every failure.
  RepeatLimiter repeats_;
  // serve's record in the run directory (what `bpfmgr status` shows), and
  // what was last written there without its time.
  std::string record_path_;
  std::string record_written_;
  void write_record(const Readiness& r);

  mutable std::mutex stats_mutex_;
  ServeStats stats_;
  Readiness readiness_;
  std::atomic<std::int64_t> heartbeat_ns_{0};

  std::mutex render_mutex_;
  PluginRegistry scrape_registry_;
};

// Which instance's table a diagnostic points into: instances are read from
// `[[instance]]` tables, each running to the next one.
std::optional<std::string> instance_at(const Manifest& m, const SourcePos& pos) {
  if (pos.line <= 0) return std::nullopt;
  const InstanceSpec* best = nullptr;
  for (auto& i : m.instances)
    if (i.pos.line > 0 && i.pos.line <= pos.line && (!best || i.pos.line > best->pos.line))
      best = &i;
  if (!best) return std::nullopt;
  return best->name;
}

std::optional<Desired> Server::read_manifest(const std::string& text) {
  Diagnostics parse_diags;
  auto dir = fs::absolute(args_.manifest).lexically_normal().parent_path().string();
  auto m = parse_manifest_text(text, args_.manifest, dir, parse_diags);
  std::optional<Desired> out;
  Diagnostics shown;  // what is logged: every problem found
  if (m) {
    m->absolute_path = fs::absolute(args_.manifest).lexically_normal().string();
    if (!args_.pin_root_override.empty()) m->pin_root = args_.pin_root_override;
    if (!pin_root_.empty() && m->pin_root != pin_root_)
      parse_diags.error(m->pin_root_pos,
                        "pin_root changed from " + pin_root_ + " to " + m->pin_root +
                            " while serving",
                        "restart `bpfmgr serve` to move to another pin root");
    // Resolve; leave out each instance a problem points into, and again
    // (an instance sharing a map of one left out fails next), until what
    // is left resolves cleanly or a problem belongs to no instance.
    std::map<std::string, std::string> failing;
    std::set<std::string> seen;
    bool manifest_level = false;
    for (std::size_t round = 0; round <= m->instances.size() && !out && !manifest_level;
         ++round) {
      Diagnostics d;
      for (auto& item : parse_diags.items()) {
        auto owner = instance_at(*m, item.pos);
        if (!owner || !failing.count(*owner)) d.error(item.pos, item.message, item.hint);
      }
      Manifest copy = *m;
      std::erase_if(copy.instances,
                    [&](const InstanceSpec& i) { return failing.count(i.name) > 0; });
      auto registry = std::make_unique<PluginRegistry>(copy.plugin_path);
      auto r = resolve_manifest(std::move(copy), *registry, d);
      if (r && d.empty()) {
        out = Desired{text, std::move(registry), std::move(r), failing};
        break;
      }
      bool progress = false;
      for (auto& item : d.items()) {
        auto owner = instance_at(*m, item.pos);
        if (!owner) {
          manifest_level = true;
        } else if (!failing.count(*owner)) {
          failing[*owner] = item.message;
          progress = true;
        }
        if (seen.insert(item.format()).second) shown.error(item.pos, item.message, item.hint);
      }
      if (!progress) manifest_level = true;
    }
    if (out && out->failing.empty()) {
      if (auto n = repeats_.clear("manifest"))
        spdlog::info("{}: no errors any more (after {} failed read(s))", args_.manifest, n);
      return out;
    }
  } else {
    for (auto& item : parse_diags.items()) shown.error(item.pos, item.message, item.hint);
  }
  // The same file:line:column lines `bpfmgr load` prints, through the log;
  // the same errors read again (each retry) only at the backoff.
  std::string lines;
  for (auto& item : shown.sorted()) lines += item.format() + "\n";
  auto verdict = repeats_.note("manifest", lines);
  auto level = verdict.log ? spdlog::level::err : spdlog::level::debug;
  if (verdict.log)
    for (auto& item : shown.sorted()) spdlog::error("{}", item.format());
  if (out)
    spdlog::log(level,
                "{}: {} instance(s) cannot be applied: {}; keeping what runs as it is "
                "for them, applying the others{}",
                args_.manifest, out->failing.size(),
                [&] {
                  std::string names;
                  for (auto& [n, why] : out->failing) names += (names.empty() ? "" : ", ") + n;
                  return names;
                }(),
                repeat_note(verdict));
  else
    spdlog::log(level, "{}: {} error(s); keeping what runs as it is{}", args_.manifest,
                shown.items().size(), repeat_note(verdict));
  std::lock_guard g(stats_mutex_);
  ++stats_.manifest_errors;
  stats_.manifest_valid = false;
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

std::optional<std::string> Server::apply_one(const Desired& d, const ResolvedInstance& ri,
                                             LoadReport& report) {
  // A manifest of this instance alone, recorded under the real manifest's
  // path; with no absolute_path the loader removes nothing else.
  ResolvedManifest one;
  one.manifest = d.resolved->manifest;
  one.registry = d.resolved->registry;
  one.manifest.path = d.resolved->manifest.absolute_path;
  one.manifest.absolute_path.clear();
  std::erase_if(one.manifest.instances,
                [&](const InstanceSpec& i) { return i.name != ri.spec->name; });
  ResolvedInstance copy = ri;
  copy.spec = one.manifest.find(ri.spec->name);
  one.instances.push_back(std::move(copy));
  try {
    LoadOptions options;
    options.catch_signals = false;
    auto rep = load_manifest(one, options);
    for (auto v : {&LoadReport::loaded, &LoadReport::updated, &LoadReport::unchanged})
      (report.*v).insert((report.*v).end(), (rep.*v).begin(), (rep.*v).end());
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
}

void Server::remove_dropped(const Desired& d) {
  // What a full load does after committing, for a partial apply: instances
  // this manifest made earlier and no longer names. Failing ones stay.
  auto names = d.all_names();
  std::set<std::string> wanted(names.begin(), names.end());
  auto dropped = observe_pin_root(PinLayout(pin_root_))
                     .dropped_from(d.resolved->manifest.absolute_path, wanted);
  if (dropped.empty()) return;
  auto rep = unpin(pin_root_, dropped, *d.registry);
  for (auto& e : rep.errors) spdlog::error("removing an instance dropped from the manifest: {}", e);
  for (auto& n : rep.removed) spdlog::info("{}: removed (dropped from the manifest)", n);
}

void Server::apply(const Desired& d,
                   const std::map<std::string, std::vector<std::string>>& drift) {
  auto t0 = Clock::now();
  LoadReport rep;
  std::map<std::string, std::string> failed;
  bool whole = false;
  if (d.failing.empty()) {
    // The whole manifest in one transaction, as `bpfmgr load` does it.
    try {
      LoadOptions options;
      // serve reads TERM/INT/HUP from its signalfd after the step: a load
      // in progress always finishes (commits or rolls back by itself).
      options.catch_signals = false;
      rep = load_manifest(*d.resolved, options);
      whole = true;
    } catch (const std::exception& e) {
      auto v = repeats_.note("apply", e.what());
      spdlog::log(v.log ? spdlog::level::err : spdlog::level::debug,
                  "apply failed, rolled back: {}; applying instance by instance{}", e.what(),
                  repeat_note(v));
    }
  }
  if (!whole) {
    // Converge what can be: each instance on its own (map owners first), so
    // one that cannot load (its cgroup is missing, the kernel lacks a
    // feature) leaves the others running, and keeps its own old version.
    rep = {};
    for (auto& ri : d.resolved->instances)
      if (auto err = apply_one(d, ri, rep)) {
        failed[ri.spec->name] = *err;
        auto v = repeats_.note("instance " + ri.spec->name, *err);
        spdlog::log(v.log ? spdlog::level::err : spdlog::level::debug,
                    "{}: cannot be applied; retrying every {}s: {}{}", ri.spec->name,
                    std::min(args_.interval_s, kRetrySeconds), *err, repeat_note(v));
      }
    remove_dropped(d);
  }
  if (whole) repeats_.clear("apply");
  for (auto& n : d.instance_names())
    if (!failed.count(n))
      if (auto k = repeats_.clear("instance " + n))
        spdlog::info("{}: applied after {} failed attempt(s)", n, k);
  for (auto& [n, why] : d.failing) failed[n] = why;
  bool ok = failed.empty();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::set<std::string> reloaded(rep.loaded.begin(), rep.loaded.end());
  reloaded.insert(rep.updated.begin(), rep.updated.end());
  apply_failed_ = failed;
  for (auto& n : d.instance_names())
    if (!failed.count(n)) applied_.insert(n);
  std::lock_guard g(stats_mutex_);
  stats_.apply_duration.observe(secs);
  ++stats_.applies[ok ? "ok" : "failed"];
  for (auto& [n, why] : failed) ++stats_.instance_apply_failures[n];
  stats_.last_apply_timestamp = unix_now();
  stats_.last_apply_ok = ok;
  std::error_code ec;
  for (auto& [inst, reasons] : drift)
    for (auto& r : reasons) {
      // Staging is cleared by every load; other drift is repaired when the
      // load replaced the instance.
      bool repaired = r == "staging_left"
                          ? !fs::exists(PinLayout(pin_root_).staging(inst).dir, ec)
                          : reloaded.count(inst) > 0;
      if (repaired) {
        ++stats_.repairs[{inst, r}];
        spdlog::warn("{}: repaired ({})", inst, r);
      } else {
        ++stats_.repair_failures[{inst, r}];
        spdlog::error("{}: drift ({}) not repaired by the load", inst, r);
      }
    }
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string failing;
  for (auto& [n, why] : failed) failing += (failing.empty() ? "" : ", ") + n;
  // A retry that changed nothing is said at the backoff, as its errors are.
  bool quiet = false;
  RepeatLimiter::Verdict v;
  if (ok)
    repeats_.clear("applied");
  else if (v = repeats_.note("applied", failing);
           rep.loaded.empty() && rep.updated.empty() && rep.removed.empty() && drift.empty())
    quiet = !v.log;
  spdlog::log(quiet ? spdlog::level::debug : spdlog::level::info,
              "applied in {:.3f}s: loaded [{}] updated [{}] unchanged [{}] removed [{}]{}{}",
              secs, list(rep.loaded), list(rep.updated), list(rep.unchanged),
              list(rep.removed), ok ? "" : " failing [" + failing + "]", repeat_note(v));
}

void Server::publish_readiness(
    const std::map<std::string, std::vector<std::string>>& drift_left) {
  Readiness r;
  r.first_apply_done = true;
  std::lock_guard g(stats_mutex_);
  r.manifest_valid = stats_.manifest_valid;
  if (desired_) {
    r.instances = desired_->all_names().size();
    for (auto& [n, why] : apply_failed_) r.problems[n] = "cannot be applied: " + why;
    for (auto& [n, reasons] : drift_left)
      if (!r.problems.count(n)) {
        std::string s;
        for (auto& x : reasons) s += (s.empty() ? "" : ", ") + x;
        r.problems[n] = "drifted: " + s;
      }
  }
  readiness_ = r;
  write_record(r);
  stats_.failing_instances.clear();
  for (auto& [n, why] : r.problems) stats_.failing_instances.push_back(n);
}

void Server::write_record(const Readiness& r) {
  if (record_path_.empty()) return;
  nlohmann::json j;
  j["pid"] = ::getpid();
  j["pid_namespace"] = pid_namespace();
  j["manifest"] = stats_.manifest_path;
  j["pin_root"] = pin_root_;
  j["ready"] = r.first_apply_done && r.manifest_valid && r.problems.empty();
  j["manifest_valid"] = r.manifest_valid;
  j["instances"] = r.instances;
  j["up"] = r.instances - std::min(r.instances, r.problems.size());
  auto& p = j["problems"] = nlohmann::json::array();
  for (auto& [n, why] : r.problems) p.push_back({{"instance", n}, {"why", why}});
  auto key = j.dump();
  if (key == record_written_) return;
  j["since"] = utc_now_text();
  try {
    write_run_record(record_path_, j.dump(2) + "\n");
    record_written_ = key;
  } catch (const std::exception& e) {
    auto v = repeats_.note("record", e.what());
    if (v.log) spdlog::warn("`bpfmgr status` will not show serve's state: {}", e.what());
  }
}

void Server::reconcile(const char* trigger, bool force_reread) {
  try {
    // Instances that could not be applied are re-resolved on each pass: a
    // cgroup created since, a plugin installed.
    if (desired_ && !desired_->failing.empty()) force_reread = true;
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
      if (d) {
        changed = true;
        bool clean = d->failing.empty();
        desired_ = std::move(d);
        std::lock_guard g(stats_mutex_);
        stats_.manifest_valid = clean;
        stats_.managed_instances = desired_->all_names();
      }
    }
    std::map<std::string, std::vector<std::string>> left;
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
      // What failed is retried on the retry timer, not on a pin-root event:
      // a failed apply's own staging and rollback are such events, and
      // retrying on them looped at ~30 applies a second.
      bool retry_due = std::string(trigger) != "drift";
      if (start || changed || (retry_due && (apply_pending_ || !apply_failed_.empty())) ||
          !drift.empty()) {
        apply(*desired_, drift);
        if (apply_failed_.empty()) apply_pending_ = false;
        if (!drift.empty()) left = drift_of(pin_root_, watched, *desired_->registry);
      }
    }
    publish_readiness(left);
    std::lock_guard g(stats_mutex_);
    ++stats_.reconciles[trigger];
    stats_.last_reconcile_timestamp = unix_now();
  } catch (const std::exception& e) {
    spdlog::error("reconcile ({}) failed: {}", trigger, e.what());
  }
  watch_pins();
  heartbeat_ns_ = Clock::now().time_since_epoch().count();
}

void Server::watch_pins() {
  if (!pin_watch_) return;
  // The pin root (an instance removed whole) and each applied instance's
  // directories (a pin removed by hand).
  std::vector<std::string> dirs{pin_root_};
  PinLayout layout(pin_root_);
  for (auto& n : applied_) {
    auto i = layout.instance(n);
    for (auto& d : {i.dir, i.maps_dir(), i.progs_dir(), i.links_dir()}) dirs.push_back(d);
  }
  pin_watch_->watch(dirs);
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
    copy.ready = readiness_.first_apply_done && readiness_.manifest_valid &&
                 readiness_.problems.empty();
  }
  std::lock_guard g(render_mutex_);
  return render_metrics(pin_root_, copy, scrape_registry_);
}

bool Server::healthy() const {
  // The loop wakes at least once a minute whatever the interval (and a load
  // takes seconds): two minutes without a heartbeat mean it is stuck.
  auto limit = std::chrono::duration<double>(kStalledSeconds);
  auto last = Clock::time_point(Clock::duration(heartbeat_ns_.load()));
  return Clock::now() - last < limit;
}

HttpServer::Reply Server::readyz() const {
  std::lock_guard g(stats_mutex_);
  const auto& r = readiness_;
  if (!r.first_apply_done) return {503, "not ready: the first apply has not finished\n"};
  std::string body;
  if (!r.manifest_valid)
    body += "manifest " + args_.manifest + " has errors (see the log); what runs is kept\n";
  for (auto& [n, why] : r.problems) body += "  " + n + ": " + why + "\n";
  if (body.empty())
    return {200, "ready: " + std::to_string(r.instances) + " instance(s) up\n"};
  return {503, "degraded: " + std::to_string(r.problems.size()) + " of " +
                   std::to_string(r.instances) + " instance(s) not up\n" + body};
}

std::string Server::status_line() const {
  std::lock_guard g(stats_mutex_);
  const auto& r = readiness_;
  std::string s = (r.problems.empty() && r.manifest_valid ? "serving " : "degraded: serving ") +
                  args_.manifest + ": " + std::to_string(r.instances - r.problems.size()) +
                  " of " + std::to_string(r.instances) + " instance(s) up";
  if (!r.problems.empty()) {
    s += "; failing:";
    for (auto& [n, why] : r.problems) s += " " + n;
  }
  if (!r.manifest_valid) s += "; manifest has errors";
  return s;
}

std::unique_ptr<HttpServer> Server::start_http() {
  if (args_.metrics_address == "none") return nullptr;
  using Reply = HttpServer::Reply;
  auto http = std::make_unique<HttpServer>(
      args_.metrics_address,
      std::map<std::string, HttpServer::Handler>{
          {"/healthz",
           [this]() -> Reply {
             return healthy() ? Reply{200, "ok\n"} : Reply{503, "reconcile loop stalled\n"};
           }},
          {"/readyz", [this] { return readyz(); }},
          {"/",
           []() -> Reply {
             return {200, "bpfmgr serve: /metrics (Prometheus), /healthz (liveness), "
                          "/readyz (readiness)\n"};
           }}},
      std::map<std::string, HttpServer::Handler>{
          {"/metrics", [this]() -> Reply {
             return {200, render(), "text/plain; version=0.0.4; charset=utf-8"};
           }}});
  spdlog::info("metrics on http://{}/metrics, /healthz, /readyz", args_.metrics_address);
  if (!http->loopback())
    spdlog::warn("{} is reachable from other hosts: /metrics, /healthz and /readyz "
                 "answer anyone without authentication (read-only); bind 127.0.0.1 "
                 "or restrict the port unless Prometheus scrapes from elsewhere",
                 args_.metrics_address);
  return http;
}

const char* Server::wait_for_trigger(int sigfd, FileWatch& watch, Clock::time_point next,
                                     bool& force, bool& stop) {
  auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
  pollfd fds[3] = {{sigfd, POLLIN, 0}, {watch.fd(), POLLIN, 0}, {pin_watch_->fd(), POLLIN, 0}};
  int n = ::poll(fds, 3, static_cast<int>(std::clamp<long long>(wait_ms, 0, 60'000)));
  if (n < 0 && errno != EINTR) throw Error("poll: " + errno_text(errno));
  const char* trigger = nullptr;
  if (n > 0 && (fds[0].revents & POLLIN)) {
    signalfd_siginfo si{};
    while (::read(sigfd, &si, sizeof si) == sizeof si) {
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
  if (stop) return nullptr;
  if (!trigger && n > 0 && (fds[1].revents & POLLIN) && watch.drain()) {
    // Editors and ConfigMap updates come as bursts: let one settle.
    pollfd w{watch.fd(), POLLIN, 0};
    while (::poll(&w, 1, 100) > 0) watch.drain();
    auto now_text = read_file(args_.manifest);
    if (now_text.value_or("") != last_seen_text_ || !now_text) trigger = "file";
  }
  if (!trigger && n > 0 && (fds[2].revents & POLLIN) && pin_watch_->drain()) {
    // `rm -r` of an instance is a burst of events: let it finish (20 ms
    // of quiet, at most 200 ms) and repair once.
    auto until = Clock::now() + std::chrono::milliseconds(200);
    pollfd w{pin_watch_->fd(), POLLIN, 0};
    while (Clock::now() < until && ::poll(&w, 1, 20) > 0) pin_watch_->drain();
    trigger = "drift";
  }
  if (!trigger && Clock::now() >= next) trigger = "interval";
  return trigger;
}

int Server::run() {
  if (auto why = interval_problem(args_.interval_s)) {
    spdlog::error("--interval: {}", *why);
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
    spdlog::error("cannot read {}: {}", args_.manifest, errno_text(errno));
    return kExitInvalid;
  }
  last_seen_text_ = *text;
  desired_ = read_manifest(*text);
  // Only a manifest broken as a whole stops serve; an instance that cannot
  // be applied is reported and retried while the others run.
  if (!desired_) return kExitInvalid;
  pin_root_ = desired_->resolved->manifest.pin_root;
  stats_.manifest_path = desired_->resolved->manifest.absolute_path;
  stats_.managed_instances = desired_->all_names();
  stats_.manifest_valid = desired_->failing.empty();

  // One serve per pin root, for as long as it runs. Loads take the "state"
  // lock themselves, and only while they change something.
  std::optional<PinRootLock> serve_lock;
  try {
    serve_lock.emplace(PinRootLock::acquire(pin_root_, LockWait::Fail, "serve"));
  } catch (const LockBusy& e) {
    spdlog::error("{}", e.what());
    return kExitFailed;
  }
  // Removed however run() ends; a serve killed outright leaves it, and
  // `status` believes it only while its writer holds the serve lock.
  record_path_ = serve_record_path(pin_root_);
  struct RemoveRecord {
    const std::string& path;
    ~RemoveRecord() { remove_run_record(path); }
  } remove_record{record_path_};

  Fd stats_fd;
  if (args_.enable_bpf_stats) {
    // Run counters accrue while any process holds this fd open.
    stats_fd = Fd(bpf_enable_stats(BPF_STATS_RUN_TIME));
    if (!stats_fd) throw Error("cannot enable BPF run-time stats: " + errno_text(errno));
    spdlog::info("BPF run-time statistics enabled while serve runs");
    stats_.bpf_stats_held = true;
  }

  FileWatch watch(args_.manifest);
  pin_watch_ = std::make_unique<DirWatch>();
  heartbeat_ns_ = Clock::now().time_since_epoch().count();
  // Bound before the first apply: a serve that cannot listen changes nothing.
  auto http = start_http();

  reconcile("start", false);
  if (!notify_service_manager("READY=1\nSTATUS=" + status_line()))
    spdlog::warn("could not tell the service manager we are ready ($NOTIFY_SOCKET={})",
                 std::getenv("NOTIFY_SOCKET"));

  auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(args_.interval_s));
  // While something is failing it is retried sooner than a full interval.
  auto retry = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::min(args_.interval_s, kRetrySeconds)));
  auto next_pass = [&] {
    std::lock_guard g(stats_mutex_);
    bool failing = !readiness_.problems.empty() || !readiness_.manifest_valid;
    return Clock::now() + (failing && last_seen_valid_ ? retry : interval);
  };
  auto next = next_pass();
  bool stop = false;
  while (!stop) {
    bool force = false;
    const char* trigger = wait_for_trigger(sigfd.get(), watch, next, force, stop);
    if (stop) break;
    if (!trigger) {
      heartbeat_ns_ = Clock::now().time_since_epoch().count();
      continue;
    }
    reconcile(trigger, force);
    next = next_pass();
    notify_service_manager("STATUS=" + status_line());
  }
  notify_service_manager("STOPPING=1");
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

std::optional<std::string> interval_problem(double seconds) {
  if (!std::isfinite(seconds) || seconds < kMinIntervalSeconds || seconds > kMaxIntervalSeconds)
    return "must be a number of seconds from " + fmt::format("{}", kMinIntervalSeconds) +
           " to " + fmt::format("{}", kMaxIntervalSeconds) + " (one day)";
  return std::nullopt;
}

std::map<std::string, std::vector<std::string>> find_drift(
    const std::string& pin_root, const std::vector<std::string>& instances) {
  PluginRegistry registry;
  return drift_of(pin_root, instances, registry);
}

nlohmann::json serve_state_for_status(const std::string& pin_root,
                                      const std::vector<std::string>& instances) {
  pid_t holder = serve_lock_holder(pin_root);
  if (holder == 0) return nullptr;
  nlohmann::json j;
  if (auto text = read_file(serve_record_path(pin_root)))
    j = nlohmann::json::parse(*text, nullptr, false);
  // In our PID namespace the record must be the lock holder's (a killed
  // serve's record is not its successor's); from another one (serve in a
  // container) its PID cannot be compared, and the holder's is shown.
  bool same_ns = j.is_object() && j.value("pid_namespace", std::uint64_t{0}) == pid_namespace();
  if (j.is_discarded() || !j.is_object() || (same_ns && j.value("pid", 0) != holder))
    return {{"pid", holder}, {"running", true}, {"starting", true}};
  j["running"] = true;
  j["pid"] = holder;
  if (!instances.empty()) {
    auto all = j.value("problems", nlohmann::json::array());
    auto& p = j["problems"] = nlohmann::json::array();
    for (auto& x : all)
      if (std::find(instances.begin(), instances.end(), x.value("instance", "")) !=
          instances.end())
        p.push_back(x);
  }
  return j;
}

int cmd_serve(const ServeArgs& args) {
  try {
    Server s(args);
    return s.run();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitFailed;
  }
}

}  // namespace bpfmgr
