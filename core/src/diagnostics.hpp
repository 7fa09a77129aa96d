// Errors about user input, each pointing at file:line:column, collected so
// that every problem of a manifest is reported in one go.
#pragma once

#include <string>
#include <vector>

namespace bpfmgr {

struct SourcePos {
  std::string file;
  int line = 0;
  int column = 0;
};

struct Diagnostic {
  SourcePos pos;
  std::string message;
  std::string hint;
  // "file:line:column: error: message" plus an indented hint line.
  std::string format() const;
};

// Longest message or hint kept whole; longer ones are cut (a 50 MB option
// value must not be echoed back whole).
inline constexpr std::size_t kMaxMessageBytes = 2048;
// Longest value quoted in a message.
inline constexpr std::size_t kMaxQuotedBytes = 80;

// `value` for a message: control bytes (NUL included) escaped as \xNN, cut
// to kMaxQuotedBytes with the number of bytes left out.
std::string shorten(const std::string& value, std::size_t max = kMaxQuotedBytes);

class Diagnostics {
 public:
  void error(SourcePos pos, std::string message, std::string hint = {});
  bool empty() const { return items_.empty(); }
  const std::vector<Diagnostic>& items() const { return items_; }
  // In file order (line, then column), for printing.
  std::vector<Diagnostic> sorted() const;
  std::string format() const;

 private:
  std::vector<Diagnostic> items_;
};

// Levenshtein distance, for "did you mean".
std::size_t edit_distance(const std::string& a, const std::string& b);
// The closest candidate within a small distance, or "" if none is close.
std::string closest_match(const std::string& word,
                          const std::vector<std::string>& candidates);
// "did you mean 'x'?" or "" when nothing is close.
std::string did_you_mean(const std::string& word,
                         const std::vector<std::string>& candidates);

}  // namespace bpfmgr
