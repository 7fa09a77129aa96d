// How often serve repeats a log line about something that keeps failing (an
// instance retried every 5 s whose cgroup is still missing): the first
// time, whenever the text changes, and then at a doubling backoff (30 s,
// 1 min, 2 min, ... at most every 10 min), each time saying how many
// repeats were not logged. Metrics count every failure regardless.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace bpfmgr {

class RepeatLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kFirstBackoff = std::chrono::seconds(30);
  static constexpr Clock::duration kMaxBackoff = std::chrono::minutes(10);

  struct Verdict {
    bool log = true;
    std::uint64_t suppressed = 0;  // repeats not logged since the last line
    std::uint64_t failures = 0;    // in a row, this one included
  };

  // `text` happened for `key` (an instance, "manifest"): log it or count it.
  Verdict note(const std::string& key, const std::string& text, Clock::time_point now = Clock::now()) {
    auto [it, fresh] = entries_.try_emplace(key);
    auto& e = it->second;
    ++e.failures;
    if (fresh || e.text != text) {
      Verdict v{true, e.suppressed, e.failures};
      e.text = text;
      e.suppressed = 0;
      e.backoff = kFirstBackoff;
      e.next = now + e.backoff;
      return v;
    }
    if (now < e.next) {
      ++e.suppressed;
      return {false, e.suppressed, e.failures};
    }
    Verdict v{true, e.suppressed, e.failures};
    e.suppressed = 0;
    e.backoff = std::min<Clock::duration>(e.backoff * 2, kMaxBackoff);
    e.next = now + e.backoff;
    return v;
  }

  // `key` is fine again: how many times in a row it had failed (0: it had
  // not), and forgets it.
  std::uint64_t clear(const std::string& key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return 0;
    auto n = it->second.failures;
    entries_.erase(it);
    return n;
  }

 private:
  struct Entry {
    std::string text;
    std::uint64_t failures = 0;
    std::uint64_t suppressed = 0;
    Clock::duration backoff{};
    Clock::time_point next{};
  };
  std::map<std::string, Entry> entries_;
};

// " (failure N; M repeats not logged)" for a repeated line, "" the first time.
inline std::string repeat_note(const RepeatLimiter::Verdict& v) {
  if (v.failures <= 1) return "";
  return " (failure " + std::to_string(v.failures) + " in a row" +
         (v.suppressed ? "; " + std::to_string(v.suppressed) + " repeat(s) not logged" : "") +
         ")";
}

}  // namespace bpfmgr
