#include "pin_layout.hpp"

#include <sys/stat.h>

#include <filesystem>

#include "mounts.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

PinLayout::PinLayout(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string pin_name_problem(std::string_view name) {
  if (name.empty()) return "an empty name";
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos)
    return "'" + std::string(name) + "' is not a plain name";
  return "";
}

std::optional<std::string> PinLayout::staged_instance(std::string_view entry) {
  if (entry.size() <= kStagingPrefix.size() || entry.substr(0, kStagingPrefix.size()) != kStagingPrefix)
    return std::nullopt;
  return std::string(entry.substr(kStagingPrefix.size()));
}

std::string pin_root_problem(const std::string& root) {
  if (root.empty() || root[0] != '/')
    return "pin root '" + root + "' must be an absolute path (e.g. /sys/fs/bpf/bpfmgr)";
  fs::path p = fs::path(root).lexically_normal();
  for (auto& part : p)
    if (part == "..") return "pin root '" + root + "' must not contain '..'";
  // Nearest existing ancestor: every existing component must be a real
  // directory, so nothing under the root is reached through a symlink.
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode))
      return "pin root " + root + " is a symlink; give the real path";
    if (!S_ISDIR(st.st_mode)) return "pin root " + root + " is not a directory";
    if (!is_on_bpffs(p))
      return "pin root " + root +
             " is not on a bpf filesystem (mount one with `mount -t bpf bpf DIR`, "
             "or use a directory under /sys/fs/bpf)";
    return "";
  }
  auto parent = p.parent_path();
  while (!parent.empty() && ::lstat(parent.c_str(), &st) != 0) parent = parent.parent_path();
  if (parent.empty() || !is_on_bpffs(parent))
    return "pin root " + root + " would not be on a bpf filesystem (" +
           (parent.empty() ? std::string("/") : parent.string()) +
           " is not bpffs); use a directory under /sys/fs/bpf";
  return "";
}

}  // namespace bpfmgr
