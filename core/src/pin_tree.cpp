#include "pin_tree.hpp"

#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "handles.hpp"
#include "errno_text.hpp"
#include "pin_txn.hpp"

namespace bpfmgr {

namespace {

// Unlinks every non-directory entry of `sub` under `parent`, then `sub`.
void remove_subdir(int parent, const std::string& parent_path, const char* sub,
                   std::vector<std::string>& errors) {
  int fd = ::openat(parent, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;
    errors.push_back(parent_path + "/" + sub + ": " +
                     (errno == ELOOP || errno == ENOTDIR ? std::string("not a directory; left alone")
                                                         : errno_text(errno)));
    return;
  }
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    errors.push_back(parent_path + "/" + sub + ": " + errno_text(errno));
    return;
  }
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      errors.push_back(parent_path + "/" + sub + "/" + name +
                       ": unexpected directory; left alone");
      continue;
    }
    if (::unlinkat(fd, name.c_str(), 0) != 0 && errno != ENOENT)
      errors.push_back("cannot remove " + parent_path + "/" + sub + "/" + name + ": " +
                       errno_text(errno));
  }
  ::closedir(d);
  if (::unlinkat(parent, sub, AT_REMOVEDIR) != 0 && errno != ENOENT &&
      errno != ENOTEMPTY)
    errors.push_back("cannot remove " + parent_path + "/" + sub + ": " + errno_text(errno));
}

}  // namespace

bool remove_owned_dir(const InstancePaths& p, std::vector<std::string>& errors) {
  Fd dir(::open(p.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return true;
    errors.push_back(p.dir + ": " + (errno == ELOOP || errno == ENOTDIR
                                         ? std::string("not a directory; left alone")
                                         : errno_text(errno)));
    return false;
  }
  auto before = errors.size();
  for (auto* sub : {"links", "progs", "maps"}) remove_subdir(dir.get(), p.dir, sub, errors);
  // The record goes only once its pins are gone: a directory with pins
  // left and no record would no longer be recognisably bpfmgr's.
  if (errors.size() != before) return false;
  // A record's replacement a crash left unrenamed: ours only when it is a
  // record map (anything else there makes the rmdir below fail, reported).
  if (is_record_pin(p.state_replacement()) &&
      ::unlinkat(dir.get(), std::string(InstancePaths::kStateReplacement).c_str(), 0) != 0 &&
      errno != ENOENT)
    errors.push_back("cannot remove " + p.state_replacement() + ": " + errno_text(errno));
  if (::unlinkat(dir.get(), "state", 0) != 0 && errno != ENOENT)
    errors.push_back("cannot remove " + p.state() + ": " + errno_text(errno));
  if (::rmdir(p.dir.c_str()) == 0 || errno == ENOENT) return true;
  errors.push_back("cannot remove " + p.dir + ": " + errno_text(errno) +
                   (errno == ENOTEMPTY ? " (holds entries bpfmgr did not make; left alone)" : ""));
  return false;
}

namespace {
// Entries of `dir` (opened relative to `parent`), "." and ".." aside; -1
// when it cannot be read.
int entry_count(int parent, const char* name, std::vector<std::string>* names = nullptr) {
  int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return -1;
  }
  int n = 0;
  while (auto* e = ::readdir(d)) {
    std::string entry = e->d_name;
    if (entry == "." || entry == "..") continue;
    ++n;
    if (names) names->push_back(entry);
  }
  ::closedir(d);
  return n;
}
}  // namespace

bool is_empty_leftover(const std::string& dir) {
  std::vector<std::string> names;
  if (entry_count(AT_FDCWD, dir.c_str(), &names) < 0) return false;
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) return false;
  for (auto& n : names)
    if ((n != "links" && n != "progs" && n != "maps") ||
        entry_count(d.get(), n.c_str()) != 0)
      return false;
  return true;
}

bool remove_empty_leftover(const std::string& dir) {
  if (!is_empty_leftover(dir)) return false;
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) return errno == ENOENT;
  // rmdir removes only what is empty: anything pinned meanwhile stays.
  for (auto* sub : {"links", "progs", "maps"})
    if (::unlinkat(d.get(), sub, AT_REMOVEDIR) != 0 && errno != ENOENT) return false;
  return ::rmdir(dir.c_str()) == 0 || errno == ENOENT;
}

std::string PinnedNames::summary() const {
  std::string out;
  auto add = [&](const char* kind, const std::vector<std::string>& names) {
    if (names.empty()) return;
    if (!out.empty()) out += "; ";
    out += std::string(kind) + ":";
    for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", " : " ") + names[i];
  };
  add("links", links);
  add("programs", progs);
  add("maps", maps);
  return out.empty() ? "nothing pinned" : out;
}

PinnedNames list_pins(const InstancePaths& p) {
  PinnedNames out;
  Fd dir(::open(p.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return out;
  auto read = [&](const char* sub, std::vector<std::string>& names) {
    int fd = ::openat(dir.get(), sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return;
    }
    while (auto* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
  };
  read("links", out.links);
  read("progs", out.progs);
  read("maps", out.maps);
  return out;
}

bool detach_map_attachment(const InstancePaths& instance,
                           const MapAttachmentRecord& attachment) {
  Fd map(bpf_obj_get(attachment.map_pin.c_str()));
  Fd prog(bpf_obj_get(instance.prog(attachment.prog).c_str()));
  return map && prog &&
         bpf_prog_detach2(prog.get(), map.get(),
                          bpf_attach_type(attachment.attach_type)) == 0;
}

}  // namespace bpfmgr
