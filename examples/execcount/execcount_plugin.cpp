// execcount: a complete bpfmgr plugin, built out of tree against the
// installed SDK (docs/plugin-sdk.md builds it step by step). It counts
// program executions per command name, optionally for one uid, shows the
// busiest commands in `bpfmgr status`, and streams one record per execution
// to `bpfmgr events`.
#include <bpf/bpf.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <bpfmgr/plugin.hpp>

#include "execcount.h"
#include "execcount.skel.h"

namespace {

std::string comm_text(const char (&comm)[EXECCOUNT_COMM_LEN]) {
  return std::string(comm, strnlen(comm, EXECCOUNT_COMM_LEN));
}

// A command name as a JSON string: comm is bytes, not UTF-8.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// One ring-buffer record (struct exec_event) per line.
class ExecFormatter final : public bpfmgr::EventFormatter {
 public:
  std::string table_header() const override { return "TIME_NS              PID        UID        COMM"; }
  std::string format(std::span<const std::byte> record, bpfmgr::EventFormat format) override {
    if (record.size() < sizeof(exec_event)) return {};  // not ours: skip
    exec_event e;
    std::memcpy(&e, record.data(), sizeof e);
    char line[160];
    if (format == bpfmgr::EventFormat::Json) {
      std::snprintf(line, sizeof line,
                    "{\"time_ns\":%" PRIu64 ",\"pid\":%" PRIu32 ",\"uid\":%" PRIu32 ",\"comm\":",
                    std::uint64_t(e.time_ns), std::uint32_t(e.pid), std::uint32_t(e.uid));
      return line + json_string(comm_text(e.comm)) + "}";
    }
    std::snprintf(line, sizeof line, "%-20" PRIu64 " %-10" PRIu32 " %-10" PRIu32 " %s",
                  std::uint64_t(e.time_ns), std::uint32_t(e.pid), std::uint32_t(e.uid),
                  comm_text(e.comm).c_str());
    return line;
  }
};

class ExecCount final : public bpfmgr::Plugin {
 public:
  bpfmgr::PluginInfo info() const override {
    return {"execcount", "0.2.0", "counts program executions per command, streams them as events"};
  }
  std::span<const std::byte> bpf_object() const override {
    std::size_t size = 0;
    auto* data = execcount_bpf__elf_bytes(&size);
    return {static_cast<const std::byte*>(data), size};
  }

  // Types, defaults and ranges: the core checks these before calling us.
  std::vector<bpfmgr::OptionSpec> option_schema() const override {
    using bpfmgr::OptionType;
    return {
        {"uid", OptionType::Int, "count only this user's executions (-1: all users)",
         std::int64_t{-1}, -1, 4294967294LL, {}},
        {"events", OptionType::Bool, "send one ring-buffer record per execution",
         true, {}, {}, {}},
        {"ring_buffer_kb", OptionType::Int, "ring buffer size in KiB (a power of two)",
         std::int64_t{256}, 4, 65536, {}},
    };
  }
  // What the schema cannot say; `bpfmgr validate` reports it with the
  // option's file:line:column.
  std::vector<bpfmgr::OptionProblem> validate(const bpfmgr::Options& o) const override {
    std::vector<bpfmgr::OptionProblem> problems;
    auto kb = o.get_int("ring_buffer_kb");
    if (kb & (kb - 1))
      problems.push_back({"ring_buffer_kb",
                          "ring_buffer_kb = " + std::to_string(kb) + " is not a power of two",
                          "the kernel sizes ring buffers in powers of two pages: try 256"});
    return problems;
  }

  // What the kernel must have (plugin API 2.2): `bpfmgr validate` checks it
  // before anything loads and names what is missing.
  void kernel_requirements(const bpfmgr::Options&, bpfmgr::KernelNeeds& k) const override {
    using bpfmgr::Feature;
    k.require(Feature::Tracepoint, "sched/sched_process_exec");
    k.require(Feature::MapType, "ringbuf", "", "5.8");
    k.require(Feature::Helper, "tracepoint:bpf_ringbuf_reserve", "", "5.8");
  }

  void before_load(bpfmgr::InstanceContext& ctx) override {
    const auto& o = ctx.options();
    ctx.set_global("only_uid", std::int64_t{o.get_int("uid")});
    ctx.set_global("send_events", bool{o.get_bool("events")});
    ctx.set_max_entries("events", std::uint32_t(o.get_int("ring_buffer_kb")) * 1024);
  }

  bpfmgr::StatusReport status(bpfmgr::PinnedContext& ctx) const override {
    bpfmgr::StatusReport r;
    // Per-CPU totals, summed (the per-CPU values are kept for --json).
    int totals = ctx.map_fd("totals");
    r.counters.push_back(bpfmgr::percpu_counter(
        "execs_seen", bpfmgr::read_percpu<std::uint64_t>(totals, EXECCOUNT_SEEN)));
    r.counters.push_back(bpfmgr::percpu_counter(
        "execs_counted", bpfmgr::read_percpu<std::uint64_t>(totals, EXECCOUNT_COUNTED)));
    r.counters.push_back(bpfmgr::percpu_counter(
        "events_dropped", bpfmgr::read_percpu<std::uint64_t>(totals, EXECCOUNT_EVENTS_DROPPED)));

    // The five busiest commands of the LRU hash.
    int fd = ctx.map_fd("execs");
    std::vector<std::pair<std::uint64_t, std::string>> rows;
    exec_key key{}, next{};
    exec_key* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      exec_stats v{};
      if (bpf_map_lookup_elem(fd, &next, &v) == 0) rows.emplace_back(v.execs, comm_text(next.comm));
      key = next;
      prev = &key;
    }
    std::sort(rows.rbegin(), rows.rend());
    for (std::size_t i = 0; i < rows.size() && i < 5; ++i)
      r.counters.push_back({"execs." + rows[i].second, rows[i].first, {}});
    r.details.push_back({"commands seen", std::to_string(rows.size())});
    return r;
  }

  std::optional<std::string> events_map() const override { return "events"; }
  std::unique_ptr<bpfmgr::EventFormatter> event_formatter(const bpfmgr::Options&) const override {
    return std::make_unique<ExecFormatter>();
  }
};

}  // namespace

BPFMGR_PLUGIN(ExecCount)
