#include "mounts.hpp"

#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <fstream>
#include <sstream>

#include <bpfmgr/plugin.hpp>

#include "errno_text.hpp"

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

}  // namespace

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

bool is_on_bpffs(const std::string& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

}  // namespace bpfmgr
