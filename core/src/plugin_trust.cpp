#include "plugin_trust.hpp"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", unsigned(m & 07777));
  return buf;
}

// Root always; the effective user too, whose own files gain nothing by
// being run by themselves (validate as a normal user).
bool trusted_owner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

// Why `st` (of `what`) cannot be trusted, or "" when it can. A directory
// others may write to is fine only when it is root's and sticky (/tmp):
// then nobody else can rename or replace the entries root made in it.
std::string distrust(const struct stat& st, const std::string& what) {
  if (!trusted_owner(st.st_uid))
    return what + " is owned by uid " + std::to_string(st.st_uid) +
           ", not by root";
  bool others_write = st.st_mode & (S_IWGRP | S_IWOTH);
  if (!others_write) return "";
  if (S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) && st.st_uid == 0) return "";
  return what + " is writable by " +
         ((st.st_mode & S_IWOTH) ? std::string("everyone") : "its group") +
         " (mode " + mode_text(st.st_mode) + ")";
}

[[noreturn]] void refuse(const std::string& action, const std::string& file,
                         const std::string& why) {
  throw PluginTrustError("refusing to " + action + " " + file + ": " + why +
                         "; bpfmgr runs only code that root alone can change "
                         "(see docs/safety.md)");
}

std::string hex(const unsigned char* p, unsigned n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (unsigned i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

// SHA-256 is all bpfmgr asks of a crypto library: Nettle's (SHA-NI where
// the CPU has it) costs a process 0.15 ms to map, where merely linking
// OpenSSL's libcrypto cost 1.3 ms of every command's start.
std::string sha256_final_hex(sha256_ctx& ctx) {
  std::uint8_t md[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof md, md);
  return hex(md, sizeof md);
}

FileIdentity identity_of(const struct stat& st) {
  FileIdentity id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = st.st_size;
  id.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  id.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
  return id;
}

void write_all(int fd, const char* p, std::size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw PluginLoadError("cannot copy " + path + " into memory: " + std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

// memfd_create, executable where the kernel asks (vm.memfd_noexec, 6.3+).
int exec_memfd(const std::string& name) {
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
  if (fd < 0 && errno == EINVAL)  // before Linux 6.3: every memfd is executable
    fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  return fd;
}

// Every directory from / down to `dir`, without following symlinks; the
// first missing component ends the walk (its parent, checked, decides who
// could create it).
std::string walk_distrust(const std::string& dir) {
  struct stat st {};
  if (::stat("/", &st) != 0) return std::string("cannot stat /: ") + std::strerror(errno);
  if (auto why = distrust(st, "directory /"); !why.empty()) return why;
  std::string walked;
  for (auto& comp : fs::path(dir).relative_path()) {
    walked += "/" + comp.string();
    if (::lstat(walked.c_str(), &st) != 0) return "";
    if (S_ISLNK(st.st_mode)) {
      // The link is as safe as its directory (checked); its target is
      // walked separately, from its real path.
      std::unique_ptr<char, decltype(&std::free)> real(::realpath(walked.c_str(), nullptr),
                                                      &std::free);
      if (!real) return "";
      if (auto why = walk_distrust(real.get()); !why.empty()) return why;
      if (::stat(walked.c_str(), &st) != 0) return "";
    }
    if (!S_ISDIR(st.st_mode)) return walked + " is not a directory";
    if (auto why = distrust(st, "directory " + walked); !why.empty()) return why;
  }
  return "";
}

// O_NONBLOCK: a FIFO put in a plugin's place must not hang the open.
int open_leaf(int dirfd, const std::string& leaf) {
  return ::openat(dirfd, leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
}

// The opened file itself: a regular file only root (or the effective
// user) can change.
void check_leaf(TrustedFile& file, const std::string& action) {
  struct stat st {};
  if (::fstat(file.fd.get(), &st) != 0) refuse(action, file.path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) refuse(action, file.path, "it is not a regular file");
  if (auto why = distrust(st, "the file"); !why.empty()) refuse(action, file.path, why);
  file.id = identity_of(st);
}

}  // namespace

std::string directory_distrust(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') return "'" + dir + "' is not an absolute path";
  return walk_distrust(fs::path(dir).lexically_normal().string());
}

std::string SealedPluginCopy::load_path() const {
  return "/proc/self/fd/" + std::to_string(fd.get());
}

SealedPluginCopy seal_plugin_copy(TrustedFile file) {
  const auto& path = file.path;
  Fd mem(exec_memfd("bpfmgr:" + fs::path(path).filename().string()));
  if (!mem) throw PluginLoadError("cannot copy " + path + " into memory: memfd_create: " +
                                  std::strerror(errno));
  sha256_ctx ctx;
  sha256_init(&ctx);
  std::vector<char> buf(1 << 16);
  for (off_t off = 0;;) {
    ssize_t n = ::pread(file.fd.get(), buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw PluginLoadError("cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    sha256_update(&ctx, size_t(n), reinterpret_cast<const std::uint8_t*>(buf.data()));
    write_all(mem.get(), buf.data(), size_t(n), path);
    off += n;
  }
  // F_SEAL_WRITE fails with EBUSY while the kernel still holds a transient
  // reference to one of the copy's pages (it waits about 150 ms first);
  // seen once in a full suite run. Asked again, a few times: nothing but
  // this process writes the copy, so the seal still covers what was hashed.
  int sealed = -1;
  for (int attempt = 0; attempt < 4 && sealed != 0; ++attempt) {
    if (attempt) ::usleep(50'000);
    sealed = ::fcntl(mem.get(), F_ADD_SEALS,
                     F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    if (sealed != 0 && errno != EBUSY) break;
  }
  if (sealed != 0)
    throw PluginLoadError("cannot seal the copy of " + path + ": " + std::strerror(errno));
  SealedPluginCopy out;
  out.fd = std::move(mem);
  out.path = std::move(file.path);
  out.sha256 = sha256_final_hex(ctx);
  out.id = file.id;
  return out;
}

void check_loader_environment() {
  if (::geteuid() != 0) return;
  for (const char* var : {"LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT"}) {
    const char* v = std::getenv(var);
    if (!v || !*v) continue;
    throw PluginTrustError(
        std::string("refusing to load plugins as root with ") + var + "=" + v +
        " set: it would make the dynamic loader run or prefer code from outside the "
        "checked directories; unset it (see docs/safety.md)");
  }
}

TrustedFile open_trusted_file(const std::string& path, const std::string& action) {
  // Symlinks in the given path are resolved once, here; the walk below
  // then follows none, so what is checked is what is opened.
  std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr),
                                                  &std::free);
  if (!real)
    throw PluginLoadError("plugin file " + path + ": " + std::strerror(errno));
  std::string canonical = real.get();

  Fd dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) refuse(action, canonical, std::string("cannot open /: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(dir.get(), &st) != 0) refuse(action, canonical, std::strerror(errno));
  if (auto why = distrust(st, "directory /"); !why.empty()) refuse(action, canonical, why);

  fs::path p(canonical);
  std::string walked;
  auto leaf = p.filename().string();
  for (auto& comp : p.parent_path().relative_path()) {
    walked += "/" + comp.string();
    Fd next(::openat(dir.get(), comp.c_str(),
                     O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next)
      refuse(action, canonical, "cannot open directory " + walked + " without following "
                        "links: " + std::strerror(errno));
    if (::fstat(next.get(), &st) != 0) refuse(action, canonical, std::strerror(errno));
    if (auto why = distrust(st, "directory " + walked); !why.empty())
      refuse(action, canonical, why);
    dir = std::move(next);
  }

  TrustedFile out;
  out.fd.reset(open_leaf(dir.get(), leaf));
  if (!out.fd)
    refuse(action, canonical, std::string("cannot open it without following links: ") +
                          std::strerror(errno));
  out.path = canonical;
  check_leaf(out, action);
  return out;
}

TrustedFile open_trusted_file_at(int dirfd, const std::string& dir, const std::string& name,
                                 const std::string& action) {
  std::string leaf = name;
  for (int links = 0;; ++links) {
    TrustedFile out;
    out.fd.reset(open_leaf(dirfd, leaf));
    if (out.fd) {
      out.path = dir + "/" + leaf;
      check_leaf(out, action);
      return out;
    }
    if (errno != ELOOP || links == 8)
      refuse(action, dir + "/" + leaf,
             std::string("cannot open it without following links: ") + std::strerror(errno));
    char target[PATH_MAX];
    ssize_t n = ::readlinkat(dirfd, leaf.c_str(), target, sizeof target);
    if (n <= 0 || n == ssize_t(sizeof target))
      return open_trusted_file(dir + "/" + leaf, action);
    std::string next(target, std::size_t(n));
    if (next.find('/') != std::string::npos || next == "." || next == "..")
      return open_trusted_file(dir + "/" + leaf, action);
    leaf = std::move(next);
  }
}

void check_plugin_hash(const std::string& path, const std::string& actual_sha256,
                       const std::string& expected_sha256, const std::string& why) {
  if (expected_sha256.empty()) return;
  std::string want = expected_sha256;
  for (auto& c : want) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (want == actual_sha256) return;
  throw PluginTrustError("refusing to load plugin " + path +
                         ": its content changed (sha256 " + actual_sha256 +
                         ", expected " + want + " " + why + ")");
}

std::string sha256_hex(std::string_view data) {
  sha256_ctx ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, data.size(), reinterpret_cast<const std::uint8_t*>(data.data()));
  return sha256_final_hex(ctx);
}

bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace bpfmgr
