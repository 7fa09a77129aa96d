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

}  // namespace bpfmgr
