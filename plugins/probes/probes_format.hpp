// probes: names and formatting of ring-buffer records (table and JSON).
#pragma once

#include <bpfmgr/plugin.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "probes.h"

namespace bpfmgr::probes {

static_assert(sizeof(probes_tuple) == 40);
static_assert(sizeof(probes_event) == 152);
static_assert(sizeof(probes_event) % 8 == 0);
static_assert(sizeof(probes_conn) == 104);
static_assert(sizeof(probes_sys_key) == 16);
static_assert(sizeof(probes_sys_stats) == 5 * 8 + PROBES_HIST_SLOTS * 8 + 16);
static_assert(sizeof(probes_counters) == 64);
static_assert(sizeof(probes_sys_slot) ==
              sizeof(probes_sys_key) + sizeof(probes_sys_stats));

// Option/JSON names, indexed like the enums in probes.h.
inline constexpr std::array<std::string_view, PROBES_OP_MAX> kOpNames = {
    "read",   "readv",  "recvfrom", "recvmsg", "recvmmsg",
    "write",  "writev", "sendto",   "sendmsg", "sendmmsg"};

struct KindName {
  std::string_view option;  // name in the `kinds` option
  std::uint32_t bit;
};
inline constexpr std::array<KindName, 8> kKindOptions = {{
    {"connect", PROBES_K_CONNECT},
    {"accept", PROBES_K_ACCEPT},
    {"close", PROBES_K_CLOSE},
    {"retransmit", PROBES_K_RETRANSMIT},
    {"reset", PROBES_K_RESET},
    {"drop", PROBES_K_DROP},
    {"rcvqueue_full", PROBES_K_RCVQ_FULL},
    {"syscalls", PROBES_K_SYSCALLS},
}};

std::string_view event_kind_name(std::uint32_t kind);
std::string_view tcp_state_name(std::uint32_t state);
std::string_view closer_name(std::uint32_t closer);
std::string_view role_name(std::uint32_t role);
// "a.b.c.d" / "x::y" (v4-mapped prints as ::ffff:a.b.c.d); "" if no family.
std::string format_addr(std::uint16_t family, const std::uint8_t* addr);

// Enum value -> name from the running kernel's BTF (skb_drop_reason,
// sk_rst_reason), prefix stripped; numbers when BTF is unavailable.
class KernelEnums {
 public:
  KernelEnums();
  std::string drop_reason(std::uint32_t v) const;
  std::string reset_reason(std::uint32_t v) const;

 private:
  std::map<std::uint32_t, std::string> drop_, reset_;
};

// The syscall_stats table (per-CPU open-addressed array) summed over slots
// and CPUs, by key. `comm` is taken from the first CPU that has one.
struct SysKeyLess {
  bool operator()(const probes_sys_key& a, const probes_sys_key& b) const {
    if (a.tgid != b.tgid) return a.tgid < b.tgid;
    if (a.op != b.op) return a.op < b.op;
    return a.sock_ino < b.sock_ino;
  }
};
using SysStatsMap = std::map<probes_sys_key, probes_sys_stats, SysKeyLess>;
SysStatsMap read_sys_stats(int map_fd);

class ProbesFormatter final : public EventFormatter {
 public:
  ProbesFormatter();
  std::string table_header() const override;
  std::string format(std::span<const std::byte> record,
                     EventFormat format) noexcept override;

  // Exposed for tests.
  std::string table_row(const probes_event& e) const;
  std::string json_line(const probes_event& e) const;

 private:
  std::int64_t realtime_offset_ns_;  // CLOCK_REALTIME - CLOCK_MONOTONIC
  // "HH:MM:SS" of the last second formatted (table rows)
  mutable std::int64_t hms_secs_ = -1;
  mutable char hms_[16] = {};
  std::shared_ptr<KernelEnums> enums_;
};

}  // namespace bpfmgr::probes
