// `bpfmgr events INSTANCE`: follows the pinned ring buffer of an instance
// loaded earlier (by any process) and prints its records through the
// plugin's formatter. One reader per ring buffer: the run directory's
// events-reader lock (run_dir.hpp), keyed by the map's id.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <span>

#include "commands.hpp"
#include "errno_text.hpp"
#include "handles.hpp"
#include "pin_layout.hpp"
#include "pin_root_access.hpp"
#include "pinned.hpp"
#include "plugin_trust.hpp"
#include "plugins.hpp"
#include "run_dir.hpp"
#include "state.hpp"

namespace bpfmgr {

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
// An instance's ring buffer, opened for reading, and its reader lock.
struct Reader {
  explicit Reader(const std::string& pin_root) : layout(pin_root) {}
  PinLayout layout;
  InstanceState state;
  PluginRegistry registry;
  std::shared_ptr<LoadedPlugin> plugin;
  std::unique_ptr<PinnedInstance> ctx;
  std::unique_ptr<PluginInstance> formatter;
  std::string map;        // the plugin's events map
  int fd = -1;            // owned by ctx
  std::uint32_t map_id = 0;
  std::optional<RunLock> lock;
  std::string ring_pin;   // where the ring buffer is pinned
};

// Step 1: the instance's record, its plugin and formatter, its ring buffer
// and the reader lock. Says why not and returns the exit code.
int open_reader(const EventsArgs& a, Reader& r) {
  if (int rc = check_pin_root_access(a.pin_root, {a.instance}); rc != kExitOk) return rc;
  auto rec = lookup_state(r.layout.instance(a.instance).state());
  if (!rec.state) {
    if (rec.kind == StateLookup::Absent)
      std::cerr << "error: no instance '" << a.instance << "' under " << a.pin_root
                << " (load it first with `bpfmgr load`)\n";
    else
      std::cerr << "error: " << r.layout.instance(a.instance).dir << ": " << rec.why << "\n";
    return kExitFailed;
  }
  r.state = std::move(*rec.state);
  auto* st = &r.state;
  try {
    r.plugin = r.registry.load_file(st->plugin_path, st->plugin_sha256,
                                kRecordedHashOrigin);
  } catch (const PluginTrustError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitInvalid;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  auto map = r.plugin->plugin->events_map();
  if (!map) {
    std::cerr << "error: plugin '" << st->plugin << "' does not stream events\n";
    return kExitInvalid;
  }
  r.map = *map;
  r.ctx = open_pinned(r.layout, a.instance, *st, *r.plugin->plugin);
  if (!r.plugin->plugin->api().format_event) {
    std::cerr << "error: plugin '" << st->plugin << "' has no event formatter\n";
    return kExitInvalid;
  }
  try {
    r.formatter = r.plugin->plugin->create(*r.ctx);
  } catch (const std::exception& e) {
    std::cerr << "error: plugin '" << st->plugin << "': " << e.what() << "\n";
    return kExitFailed;
  }
  try {
    r.fd = r.ctx->map_fd(r.map);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
  // A ring buffer has one consumer position: two readers would each see
  // only part of the records. One reader per map: the run directory's
  // reader lock, keyed by the map's id (bpffs pins cannot be locked).
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(r.fd, &info, &info_len) != 0) {
    std::cerr << "error: cannot inspect ring buffer: " << errno_text(errno) << "\n";
    return kExitFailed;
  }
  try {
    r.lock.emplace(
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
  r.map_id = info.id;
  r.ring_pin = r.layout.instance(a.instance).map(r.map);
  for (auto& sm : r.state.shared_maps)
    if (sm.map == r.map) r.ring_pin = sm.pin;
  return kExitOk;

}

// Step 2: records printed as they come until --count, --duration, Ctrl-C,
// or the ring buffer's pin goes.
int follow(const EventsArgs& a, Reader& r) {
  EventSink sink{r.formatter.get(), a.json ? EventFormat::Json : EventFormat::Table, 0,
                 a.count};
  RingBuffer rb(ring_buffer__new(r.fd, on_record, &sink, nullptr));
  if (!rb) {
    std::cerr << "error: cannot open ring buffer '" << r.map << "': "
              << errno_text(errno) << "\n";
    return kExitFailed;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (!a.json) {
    try {
      std::cout << r.formatter->event_header() << "\n";
    } catch (const std::exception& e) {
      std::cerr << "error: plugin '" << r.state.plugin << "': " << e.what() << "\n";
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
      std::cerr << "error: reading ring buffer '" << r.map << "' of instance '"
                << a.instance << "': " << errno_text(n) << "\n";
      return kExitFailed;
    }
    auto now = std::chrono::steady_clock::now();
    if (a.duration_s > 0 && now >= deadline) break;
    if (now >= next_check) {
      next_check = now + std::chrono::milliseconds(500);
      if (pinned_map_id(r.ring_pin) != r.map_id) {
        std::cerr << "error: instance '" << a.instance << "' was unpinned or its "
                  << "ring buffer replaced while reading (" << r.ring_pin
                  << "); stopping after " << sink.seen << " event(s)\n";
        return kExitFailed;
      }
    }
  }
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace

int cmd_events(const EventsArgs& a) {
  Reader r(a.pin_root);
  if (int rc = open_reader(a, r); rc != kExitOk) return rc;
  return follow(a, r);
}

}  // namespace bpfmgr
