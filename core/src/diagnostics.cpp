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

std::string shorten(const std::string& value, std::size_t max) {
  std::string out;
  std::size_t i = 0;
  for (; i < value.size() && out.size() < max; ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char* digits = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += char(c);
    }
  }
  if (i < value.size())
    out += "... (" + std::to_string(value.size() - i) + " more bytes)";
  return out;
}

namespace {
std::string cap(std::string s) {
  if (s.size() <= kMaxMessageBytes) return s;
  auto cut = s.size() - kMaxMessageBytes;
  s.resize(kMaxMessageBytes);
  return s + "... (" + std::to_string(cut) + " more bytes not shown)";
}
}  // namespace

void Diagnostics::error(SourcePos pos, std::string message, std::string hint) {
  if (pos.file.size() > kMaxMessageBytes) pos.file = shorten(pos.file, kMaxMessageBytes);
  items_.push_back({std::move(pos), cap(std::move(message)), cap(std::move(hint))});
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
