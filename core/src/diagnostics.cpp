#include "diagnostics.hpp"

#include <algorithm>
#include <numeric>
#include <tuple>

namespace bpfmgr {

std::string Diagnostic::format() const {
  std::string s = pos.file;
  if (pos.line > 0)
    s += ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
  s += ": error: " + message;
  if (!hint.empty()) s += "\n    hint: " + hint;
  return s;
}

std::vector<Diagnostic> Diagnostics::sorted() const {
  auto out = items_;
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) {
    return std::tie(a.pos.file, a.pos.line, a.pos.column) <
           std::tie(b.pos.file, b.pos.line, b.pos.column);
  });
  return out;
}

std::string Diagnostics::format() const {
  std::string s;
  for (auto& d : sorted()) s += d.format() + "\n";
  return s;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string closest_match(const std::string& word,
                          const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (auto& c : candidates) {
    std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string did_you_mean(const std::string& word,
                         const std::vector<std::string>& candidates) {
  auto m = closest_match(word, candidates);
  return m.empty() ? std::string() : "did you mean '" + m + "'?";
}

}  // namespace bpfmgr
