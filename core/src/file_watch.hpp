// Tells when a file may have changed, whichever way it is replaced:
// written in place, replaced by rename (editors, `install`), or switched by a
// symlink swap (Kubernetes ConfigMap volumes: `manifest.toml` ->
// `..data/manifest.toml`, with `..data` re-pointed by an atomic rename).
// inotify watches the file's directory (renames and swaps happen there) and
// the file the path currently resolves to (in-place writes through a
// symlink); the latter is re-armed after every batch since its target moves.
// Callers compare contents: an event means "look again", not "changed".
#pragma once

#include <string>
#include <vector>

#include "handles.hpp"

namespace bpfmgr {

class FileWatch {
 public:
  // Throws bpfmgr::Error when inotify cannot watch the directory.
  explicit FileWatch(std::string path);
  // Readable (poll POLLIN) when events are pending.
  int fd() const { return fd_.get(); }
  // Reads every pending event without blocking; re-arms the watch on the
  // symlink target. Returns whether any event concerned the file.
  bool drain();

 private:
  void arm_target();
  std::string path_;
  std::string dir_;
  std::string base_;
  std::string target_;  // what the path resolved to when last armed
  Fd fd_;
  int dir_wd_ = -1;
  std::vector<int> target_wds_;
};

// Tells when entries disappear from (or appear in) a set of directories:
// serve's bpffs pin tree (a pin removed by hand, `rm -r` of an instance, a
// reboot-like wipe) so drift is repaired when it happens rather than at the
// next periodic pass. bpffs and cgroup2 report create, unlink, rmdir and
// rename to inotify like any VFS filesystem (checked on 6.1, 6.12 and 6.18
// by serve's tests); reads and bpf_obj_get() report nothing, so scrapes do
// not wake it. Watches are per directory, not recursive: the caller names
// every directory to watch and calls watch() again after changing the tree.
class DirWatch {
 public:
  DirWatch();
  int fd() const { return fd_.get(); }
  // Replaces the watched set; directories that do not exist are skipped.
  void watch(const std::vector<std::string>& dirs);
  // Reads every pending event without blocking; whether any was a removal,
  // rename or creation inside (or of) a watched directory.
  bool drain();

 private:
  Fd fd_;
  std::vector<int> wds_;
};

}  // namespace bpfmgr
