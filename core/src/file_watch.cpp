#include "file_watch.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>

#include <bpfmgr/plugin.hpp>

#include "errno_text.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {
constexpr std::uint32_t kDirEvents = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                                     IN_CREATE | IN_DELETE | IN_ATTRIB | IN_ONLYDIR;
constexpr std::uint32_t kFileEvents = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB |
                                      IN_DELETE_SELF | IN_MOVE_SELF;
}  // namespace

FileWatch::FileWatch(std::string path) : path_(std::move(path)) {
  auto p = fs::absolute(path_).lexically_normal();
  dir_ = p.parent_path().string();
  base_ = p.filename().string();
  fd_ = Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd_) throw Error("inotify: " + errno_text(errno));
  dir_wd_ = ::inotify_add_watch(fd_.get(), dir_.c_str(), kDirEvents);
  if (dir_wd_ < 0) throw Error("cannot watch " + dir_ + ": " + errno_text(errno));
  arm_target();
}

void FileWatch::arm_target() {
  // The file the path resolves to now, and its directory when that is not
  // ours (a symlink to a file elsewhere, a ConfigMap's timestamped dir).
  char resolved[PATH_MAX];
  std::string now = ::realpath(path_.c_str(), resolved) ? resolved : "";
  if (now == target_ && !target_wds_.empty()) return;  // same file: armed
  for (int wd : target_wds_) ::inotify_rm_watch(fd_.get(), wd);
  target_wds_.clear();
  target_ = now;
  if (now.empty()) return;  // absent for now
  int wd = ::inotify_add_watch(fd_.get(), resolved, kFileEvents);
  if (wd >= 0) target_wds_.push_back(wd);
  auto target_dir = fs::path(resolved).parent_path().string();
  if (target_dir != dir_) {
    wd = ::inotify_add_watch(fd_.get(), target_dir.c_str(), kDirEvents);
    if (wd >= 0 && wd != dir_wd_) target_wds_.push_back(wd);
  }
}

bool FileWatch::drain() {
  bool relevant = false;
  alignas(inotify_event) char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n <= 0) break;  // EAGAIN: nothing more pending
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        relevant = true;
        continue;
      }
      // A watch removed by arm_target() reports its own removal: not news
      // (and counting it would re-arm forever).
      if (ev->mask & IN_IGNORED) continue;
      if (ev->wd != dir_wd_) {
        relevant = true;  // the file itself, or where its symlink points
        continue;
      }
      std::string name = ev->len ? ev->name : "";
      // Our file, or a ConfigMap's "..data" / "..2026_..." entries.
      if (name == base_ || name.rfind("..", 0) == 0) relevant = true;
    }
  }
  if (relevant) arm_target();
  return relevant;
}

namespace {
constexpr std::uint32_t kTreeEvents = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                      IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
}  // namespace

DirWatch::DirWatch() {
  fd_ = Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd_) throw Error("inotify: " + errno_text(errno));
}

void DirWatch::watch(const std::vector<std::string>& dirs) {
  // Re-adding a watched inode returns its old descriptor: remove all first
  // so that a directory replaced by rename (an updated instance) is
  // watched under its new inode.
  for (int wd : wds_) ::inotify_rm_watch(fd_.get(), wd);
  wds_.clear();
  for (auto& d : dirs) {
    int wd = ::inotify_add_watch(fd_.get(), d.c_str(), kTreeEvents);
    if (wd >= 0) wds_.push_back(wd);
  }
}

bool DirWatch::drain() {
  bool relevant = false;
  alignas(inotify_event) char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      // IN_IGNORED follows our own inotify_rm_watch(): not news.
      if (!(ev->mask & IN_IGNORED)) relevant = true;
    }
  }
  return relevant;
}

}  // namespace bpfmgr
