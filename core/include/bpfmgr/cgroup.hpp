// The one rule by which bpfmgr and its plugins turn an option value into a
// cgroup v2 directory: `validate` checks with it, `load` attaches with it,
// and a plugin that puts a cgroup id or level into its BPF globals reads them
// from it, so a value means the same cgroup at every step.
// Header-only, standard C++ and POSIX: a plugin needs nothing new to link.
//
//   ""  and "/"                 the root of the cgroup2 mount
//   "<mount>/a/b" (absolute,    that cgroup (the mount is matched by whole
//    under the mount)           components: /sys/fs/cgroupx is not under it)
//   "a/b", "/a/b" (anything     relative to the mount: <mount>/a/b
//    else)
//
// Refused, with the reason: NUL bytes; ".." components ("x/sub/.." must not
// quietly mean "x", nor "../.." leave the cgroup tree); a component that is
// a symlink or not a directory (the path is opened one component at a time
// with O_NOFOLLOW from the mount); a directory that is not on cgroup2.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace bpfmgr {

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

// A resolved cgroup v2 directory.
struct Cgroup {
  std::string path;        // absolute: the mount, then `relative`
  std::string relative;    // below the mount, "" for the root ("a/b")
  std::uint64_t id = 0;    // inode number: bpf_get_current_cgroup_id()'s value
  std::uint32_t level = 0; // 0 for the root, 2 for "a/b": the level
                           // bpf_get_current_ancestor_cgroup_id() takes
};

namespace detail {

struct CgroupFd {  // closes on scope exit; release() hands it over
  int fd = -1;
  ~CgroupFd() {
    if (fd >= 0) ::close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

}  // namespace detail

// Resolves `value` by the rule above against `mount` (the cgroup2 mount
// point; tests pass another directory). Returns "" and fills `out`, or the
// reason it names no cgroup v2 directory. With `dir_fd`, also hands over a
// descriptor of the directory (O_RDONLY | O_DIRECTORY, close-on-exec; the
// caller closes it), the one that was checked, to attach through.
inline std::string resolve_cgroup(std::string_view value, Cgroup& out,
                                  int* dir_fd = nullptr,
                                  const std::string& mount = cgroup2_mount()) {
  if (value.find('\0') != std::string_view::npos)
    return "a cgroup path cannot contain a NUL byte";
  std::vector<std::string_view> parts;
  for (std::size_t start = 0; start <= value.size();) {
    auto end = value.find('/', start);
    if (end == std::string_view::npos) end = value.size();
    auto part = value.substr(start, end - start);
    if (part == "..") return "'..' is not allowed in a cgroup path; name the cgroup itself";
    if (!part.empty() && part != ".") parts.push_back(part);
    start = end + 1;
  }
  if (mount.empty()) return "no cgroup v2 mount found in /proc/self/mounts";
  // An absolute value that starts with the mount's components is taken as
  // it is: drop those components.
  std::string root = mount;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (!value.empty() && value.front() == '/') {
    std::vector<std::string_view> mount_parts;
    std::string_view m(root);
    for (std::size_t start = 1; start < m.size();) {
      auto end = m.find('/', start);
      if (end == std::string_view::npos) end = m.size();
      if (end > start) mount_parts.push_back(m.substr(start, end - start));
      start = end + 1;
    }
    bool under = parts.size() >= mount_parts.size();
    for (std::size_t i = 0; under && i < mount_parts.size(); ++i)
      under = parts[i] == mount_parts[i];
    if (under) parts.erase(parts.begin(), parts.begin() + std::ptrdiff_t(mount_parts.size()));
  }

  out = Cgroup{};
  out.path = root;
  detail::CgroupFd dir{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir.fd < 0) return "cgroup2 mount " + root + ": " + std::strerror(errno);
  for (auto part : parts) {
    std::string name(part);
    out.path += (out.path == "/" ? "" : "/") + name;
    out.relative += (out.relative.empty() ? "" : "/") + name;
    ++out.level;
    int next = ::openat(dir.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      int err = errno;
      struct stat st {};
      if (err == ELOOP || (err == ENOTDIR && ::fstatat(dir.fd, name.c_str(), &st,
                                                        AT_SYMLINK_NOFOLLOW) == 0 &&
                           S_ISLNK(st.st_mode)))
        return out.path + " is a symbolic link; name the cgroup itself";
      if (err == ENOTDIR) return out.path + " is not a directory";
      return "cgroup " + out.path + ": " + std::strerror(err) +
             (err == ENOENT ? " (create it before loading)" : "");
    }
    ::close(dir.fd);
    dir.fd = next;
  }
  struct statfs fs {};
  if (::fstatfs(dir.fd, &fs) != 0 || static_cast<unsigned long>(fs.f_type) != kCgroup2Magic)
    return out.path + " is not a cgroup v2 directory";
  struct stat st {};
  if (::fstat(dir.fd, &st) != 0) return "cgroup " + out.path + ": " + std::strerror(errno);
  out.id = st.st_ino;
  if (dir_fd) *dir_fd = dir.release();
  return "";
}

}  // namespace bpfmgr
