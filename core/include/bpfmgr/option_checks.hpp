// Checks plugins share for option values that name host things (cgroup
// paths), so that `bpfmgr validate` refuses what `load` would
// fail on, with the same words in every plugin. Header-only, standard C++
// and POSIX: a plugin calls one function from its validate() and turns a
// non-empty answer into an OptionProblem.
#pragma once

#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace bpfmgr::check {

inline constexpr unsigned long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC

// Mount point of cgroup v2 (first cgroup2 line of /proc/self/mounts), ""
// when there is none.
inline std::string cgroup2_mount() {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream is(line);
    std::string dev, dir, type;
    if (is >> dev >> dir >> type && type == "cgroup2") return dir;
  }
  return "";
}

// Why `value` cannot name a cgroup v2 directory, or "" when it does. The
// rule every plugin resolves by: "" and "/" are the cgroup2 root, a path
// starting with the cgroup2 mount is taken as it is, anything else is
// relative to the mount. NUL bytes and ".." components are refused before
// anything is resolved: "x/sub/.." must not quietly mean "x", nor "../.."
// leave the cgroup tree.
inline std::string cgroup_path_problem(const std::string& value) {
  if (value.find('\0') != std::string::npos) return "a cgroup path cannot contain a NUL byte";
  std::string::size_type start = 0;
  while (start <= value.size()) {
    auto end = value.find('/', start);
    if (end == std::string::npos) end = value.size();
    if (value.compare(start, end - start, "..") == 0)
      return "'..' is not allowed in a cgroup path; name the cgroup itself";
    start = end + 1;
  }
  auto root = cgroup2_mount();
  if (root.empty()) return "no cgroup v2 mount found in /proc/self/mounts";
  std::string path;
  auto first = value.find_first_not_of('/');
  if (first == std::string::npos)
    path = root;  // "" or "/"
  else if (value.compare(0, root.size() + 1, root + "/") == 0 || value == root)
    path = value;
  else
    path = root + "/" + value.substr(first);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return "cgroup " + path + ": " + std::strerror(errno) +
           (errno == ENOENT ? " (create it before loading)" : "");
  if (!S_ISDIR(st.st_mode)) return path + " is not a directory";
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0 || static_cast<unsigned long>(fs.f_type) != kCgroup2Magic)
    return path + " is not a cgroup v2 directory";
  return "";
}

}  // namespace bpfmgr::check
