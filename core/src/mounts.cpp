#include "mounts.hpp"

#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <bpfmgr/plugin.hpp>

#include "errno_text.hpp"

namespace bpfmgr {

namespace {

// The filesystem `dir` is on is of `magic`: one statfs, where reading
// /proc/self/mounts (three times a load) cost 0.15 ms, more in a container
// with many mounts.
bool on_filesystem(const char* dir, long magic) {
  struct statfs st {};
  return ::statfs(dir, &st) == 0 && st.f_type == magic;
}

}  // namespace

void ensure_bpffs() {
  if (on_filesystem("/sys/fs/bpf", BPF_FS_MAGIC)) return;
  ::mkdir("/sys/fs/bpf", 0755);
  if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
    throw Error("cannot mount bpffs at /sys/fs/bpf: " + errno_text(errno));
  spdlog::info("mounted bpffs at /sys/fs/bpf");
}

void ensure_tracefs() {
  if (on_filesystem("/sys/kernel/tracing", TRACEFS_MAGIC) ||
      on_filesystem("/sys/kernel/debug/tracing", TRACEFS_MAGIC))
    return;
  if (::mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0) {
    spdlog::warn("cannot mount tracefs at /sys/kernel/tracing ({}); "
                 "tracepoint programs may fail to attach",
                 errno_text(errno));
    return;
  }
  spdlog::debug("mounted tracefs at /sys/kernel/tracing");
}

void ensure_load_filesystems() {
  ensure_bpffs();
  ensure_tracefs();
}

bool is_on_bpffs(const std::string& path) { return on_filesystem(path.c_str(), BPF_FS_MAGIC); }

}  // namespace bpfmgr
