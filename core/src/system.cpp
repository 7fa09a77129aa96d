#include "system.hpp"

#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <bpfmgr/plugin.hpp>

namespace bpfmgr {

namespace {

struct MountEntry {
  std::string dir, type;
};

std::vector<MountEntry> mounts() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream is(line);
    MountEntry e;
    std::string dev;
    if (is >> dev >> e.dir >> e.type) out.push_back(e);
  }
  return out;
}

bool mounted(const std::string& dir, const std::string& type) {
  for (auto& m : mounts())
    if (m.dir == dir && m.type == type) return true;
  return false;
}

thread_local std::string* g_capture = nullptr;

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  char buf[8192];
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return n;
  std::string msg(buf, std::min<size_t>(size_t(n), sizeof buf - 1));
  if (g_capture && level != LIBBPF_DEBUG) {
    g_capture->append(msg);
    return n;
  }
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  switch (level) {
    case LIBBPF_WARN: spdlog::warn("libbpf: {}", msg); break;
    case LIBBPF_INFO: spdlog::debug("libbpf: {}", msg); break;
    case LIBBPF_DEBUG: spdlog::trace("libbpf: {}", msg); break;
  }
  return n;
}

}  // namespace

std::string errno_text(int err) {
  if (err < 0) err = -err;
  return std::strerror(err);
}

void ensure_bpffs() {
  if (mounted("/sys/fs/bpf", "bpf")) return;
  ::mkdir("/sys/fs/bpf", 0755);
  if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
    throw Error("cannot mount bpffs at /sys/fs/bpf: " + errno_text(errno));
  spdlog::info("mounted bpffs at /sys/fs/bpf");
}

void ensure_tracefs() {
  if (mounted("/sys/kernel/tracing", "tracefs") ||
      mounted("/sys/kernel/debug/tracing", "tracefs"))
    return;
  if (::mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0) {
    spdlog::warn("cannot mount tracefs at /sys/kernel/tracing ({}); "
                 "tracepoint programs may fail to attach",
                 errno_text(errno));
    return;
  }
  spdlog::debug("mounted tracefs at /sys/kernel/tracing");
}

const std::string& cgroup2_root() {
  static const std::string root = [] {
    for (auto& m : mounts())
      if (m.type == "cgroup2") return m.dir;
    return std::string();
  }();
  if (root.empty())
    throw Error("no cgroup v2 mount found in /proc/self/mounts");
  return root;
}

bool is_on_bpffs(const std::string& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

void install_libbpf_logger() { libbpf_set_print(libbpf_print); }

static thread_local std::string g_capture_buffer;

LibbpfLogCapture::LibbpfLogCapture() {
  g_capture_buffer.clear();
  g_capture = &g_capture_buffer;
}
LibbpfLogCapture::~LibbpfLogCapture() { g_capture = nullptr; }
const std::string& LibbpfLogCapture::text() const { return g_capture_buffer; }

std::string verifier_log_tail(const std::string& captured,
                              const std::string& prog, int max_lines) {
  // libbpf 1.x frames the log as:
  //   libbpf: prog 'NAME': -- BEGIN PROG LOAD LOG --\n ... \n-- END PROG LOAD LOG --
  std::string begin = "prog '" + prog + "': -- BEGIN PROG LOAD LOG --";
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
  // The verifier's summary ("processed N insns ...") follows the error;
  // keep the tail, which holds the failing instruction and the reason.
  size_t from = lines.size() > size_t(max_lines) ? lines.size() - max_lines : 0;
  std::string out;
  if (from > 0)
    out += "  ... (" + std::to_string(from) + " earlier lines omitted)\n";
  for (size_t i = from; i < lines.size(); ++i) out += "  " + lines[i] + "\n";
  return out;
}

}  // namespace bpfmgr
