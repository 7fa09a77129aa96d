#include "verifier_log.hpp"

#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <bpfmgr/plugin.hpp>

#include "errno_text.hpp"

namespace bpfmgr {

namespace {

thread_local std::string* g_capture = nullptr;
// --verifier-log FILE: every program load log libbpf reports goes here whole.
int g_verifier_log_fd = -1;

constexpr std::string_view kLogBegin = "-- BEGIN PROG LOAD LOG --";

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  // Formatting is what a message costs, and libbpf says some 30 things per
  // object at DEBUG that only trace logging shows. Warnings carry the
  // verifier log (captured, or written to --verifier-log's file).
  bool wanted = level == LIBBPF_WARN || (level == LIBBPF_INFO && g_capture) ||
                spdlog::should_log(level == LIBBPF_INFO ? spdlog::level::debug
                                                        : spdlog::level::trace);
  if (!wanted) return 0;
  // Sized to the message: a verifier log runs to megabytes, and its end
  // (the reason) is what matters most.
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return n;
  std::string msg(size_t(n), '\0');
  std::vsnprintf(msg.data(), msg.size() + 1, fmt, ap);
  if (g_verifier_log_fd >= 0 && msg.find(kLogBegin) != std::string::npos) {
    for (size_t off = 0; off < msg.size();) {
      ssize_t w = ::write(g_verifier_log_fd, msg.data() + off, msg.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        spdlog::warn("cannot write the verifier log file: {}", std::strerror(errno));
        break;
      }
      off += size_t(w);
    }
  }
  if (g_capture && level != LIBBPF_DEBUG) {
    g_capture->append(msg);
    return n;
  }
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  switch (level) {
    // libbpf starts every message with "libbpf: " itself.
    case LIBBPF_WARN: spdlog::warn("{}", msg); break;
    case LIBBPF_INFO: spdlog::debug("{}", msg); break;
    case LIBBPF_DEBUG: spdlog::trace("{}", msg); break;
  }
  return n;
}

bool starts_with(const std::string& s, std::string_view p) {
  return s.compare(0, p.size(), p) == 0;
}

// The verifier's closing statistics, which follow its reason.
bool is_summary_line(const std::string& l) {
  return starts_with(l, "processed ") || starts_with(l, "verification time") ||
         starts_with(l, "stack depth") || starts_with(l, "max_states_per_insn");
}

// "71: (0f) r6 += r0    ; R0=..." is an instruction line.
bool is_insn_line(const std::string& l) {
  size_t i = 0;
  while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i]))) ++i;
  return i > 0 && l.compare(i, 3, ": (") == 0;
}

std::string rtrim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

}  // namespace

void install_libbpf_logger() { libbpf_set_print(libbpf_print); }

static thread_local std::string g_capture_buffer;

LibbpfLogCapture::LibbpfLogCapture() {
  g_capture_buffer.clear();
  g_capture = &g_capture_buffer;
}
LibbpfLogCapture::~LibbpfLogCapture() { g_capture = nullptr; }
const std::string& LibbpfLogCapture::text() const { return g_capture_buffer; }

std::vector<std::string> verifier_log_lines(const std::string& captured,
                                            const std::string& prog) {
  // libbpf 1.x frames the log as:
  //   libbpf: prog 'NAME': -- BEGIN PROG LOAD LOG --\n ... \n-- END PROG LOAD LOG --
  std::string begin = "prog '" + prog + "': " + std::string(kLogBegin);
  std::string body = captured;
  if (auto b = captured.find(begin); b != std::string::npos) {
    auto start = captured.find('\n', b);
    auto end = captured.find("-- END PROG LOAD LOG --", b);
    if (start != std::string::npos)
      body = captured.substr(start + 1, end == std::string::npos
                                            ? std::string::npos
                                            : end - start - 1);
  }
  std::vector<std::string> lines;
  std::istringstream is(body);
  for (std::string l; std::getline(is, l);)
    if (!l.empty()) lines.push_back(l);
  return lines;
}

VerifierFailure verifier_failure(const std::string& captured, const std::string& prog) {
  auto lines = verifier_log_lines(captured, prog);
  VerifierFailure f;
  size_t end = lines.size();
  while (end > 0 && is_summary_line(lines[end - 1])) --end;
  if (end == 0) return f;
  f.reason = rtrim(lines[end - 1]);
  size_t i = end - 1;
  while (i > 0 && !is_insn_line(lines[i - 1])) --i;
  if (i == 0) return f;
  auto insn = lines[i - 1];
  f.instruction = rtrim(insn.substr(0, insn.find(';')));
  // BTF line info: the verifier prints "; <source text> @ file.c:LINE"
  // before the first instruction of each source line.
  for (size_t j = i - 1; j > 0; --j) {
    auto& l = lines[j - 1];
    if (starts_with(l, "; ")) {
      f.source = rtrim(l.substr(2));
      break;
    }
    if (starts_with(l, "from ") || starts_with(l, "func#")) break;
  }
  return f;
}

std::string verifier_log_tail(const std::string& captured,
                              const std::string& prog, int max_lines) {
  auto lines = verifier_log_lines(captured, prog);
  std::string out;
  if (!prog.empty()) {
    auto f = verifier_failure(captured, prog);
    if (!f.reason.empty()) out += "  reason:      " + f.reason + "\n";
    if (!f.instruction.empty()) out += "  instruction: " + f.instruction + "\n";
    if (!f.source.empty()) out += "  source:      " + f.source + "\n";
    if (!out.empty()) out += "  end of the verifier log:\n";
  }
  // The verifier's summary ("processed N insns ...") follows the error;
  // keep the tail, which holds the failing instruction and the reason.
  size_t from = lines.size() > size_t(max_lines) ? lines.size() - max_lines : 0;
  if (from > 0)
    out += "  ... (" + std::to_string(from) + " earlier lines omitted" +
           (g_verifier_log_fd >= 0 ? "; the whole log is in the --verifier-log file"
                                   : "; `bpfmgr load --verifier-log FILE` keeps them") +
           ")\n";
  for (size_t i = from; i < lines.size(); ++i) out += "  " + lines[i] + "\n";
  return out;
}

void set_verifier_log_file(const std::string& path) {
  // Never through a link: root writes this file.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw Error("cannot open verifier log file " + path + ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("verifier log file " + path + " is not a regular file");
  }
  if (g_verifier_log_fd >= 0) ::close(g_verifier_log_fd);
  g_verifier_log_fd = fd;
}

}  // namespace bpfmgr
