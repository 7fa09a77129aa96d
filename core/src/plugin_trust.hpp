// Trust for plugin files (and the benchmark harnesses `bpfmgr bench` runs):
// bpfmgr runs as root and dlopen() runs a library's constructors, so no code
// is loaded or run that someone other than root (or the
// user running bpfmgr) could have written or swapped. The rules are sshd's
// StrictModes and sudo's: the file and every directory above it are owned by
// root (or the effective user) and writable by nobody else. The file is
// checked through the descriptor it is read from, and what is loaded is a
// sealed in-memory copy of exactly the bytes that were hashed, so neither a
// swap nor an in-place write between check and load can win. The same
// rules cover the plugin's whole dependency closure (plugin_deps.hpp).
// See docs/safety.md.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "handles.hpp"
#include "plugins.hpp"

namespace bpfmgr {

// A plugin refused for trust reasons; invalid input (exit 2).
class PluginTrustError : public PluginLoadError {
 public:
  using PluginLoadError::PluginLoadError;
};

// Any file bpfmgr runs code from (a plugin, a plugin's dependency, a
// benchmark harness): opened O_RDONLY through a checked walk of its
// directories. `action` words the refusal: "refusing to <action> <path>:
// ...". Run it only through the descriptor (fexecve, or a sealed copy).
struct TrustedFile {
  Fd fd;
  std::string path;  // canonical
  FileIdentity id;   // fstat of `fd`
};
TrustedFile open_trusted_file(const std::string& path, const std::string& action);

// File `name` of a directory already judged by directory_distrust() and
// opened as `dirfd`, whose canonical path is `dir`: the dependency walk's
// library lookup, without walking from / again for every library. A
// symlink is followed here only to another name in the same directory
// (libbpf.so.1 -> libbpf.so.1.1.2); any other goes through
// open_trusted_file().
TrustedFile open_trusted_file_at(int dirfd, const std::string& dir, const std::string& name,
                                 const std::string& action);

// Why directory `dir` (and every directory above it, the targets of
// symlinks on the way included) cannot be trusted to hold code, "" when it
// can. A directory that does not exist is judged by its nearest existing
// ancestor: only someone who can write there could create it.
std::string directory_distrust(const std::string& dir);

// A plugin's bytes, checked and copied into a sealed memfd: what dlopen()
// maps is exactly what was hashed. The memfd is never closed while the
// library is loaded, so its /proc/self/fd/N name and its inode are unique
// for the life of the process (glibc finds a loaded library by either).
struct SealedPluginCopy {
  Fd fd;               // the sealed memfd
  std::string path;    // canonical path of the file, for messages and records
  std::string sha256;  // of the bytes in `fd`
  FileIdentity id;     // of the file they were read from
  // "/proc/self/fd/N": dlopen() this, never `path`.
  std::string load_path() const;
};
SealedPluginCopy seal_plugin_copy(TrustedFile file);

// Refuses to load any plugin when running as root with LD_LIBRARY_PATH,
// LD_PRELOAD or LD_AUDIT set: they would put other code into the process
// or before a plugin's dependencies. Throws PluginTrustError.
void check_loader_environment();

// Says where the hash of a state record comes from, in messages.
inline constexpr const char* kRecordedHashOrigin =
    "as recorded when the instance was loaded; `bpfmgr load` the manifest "
    "again to run the new file";

// Throws PluginTrustError when `expected_sha256` is not empty and differs
// from the file's; `why` says what the expected hash came from.
void check_plugin_hash(const std::string& path, const std::string& actual_sha256,
                       const std::string& expected_sha256, const std::string& why);

// Lowercase hex sha256 of a byte string (Nettle).
std::string sha256_hex(std::string_view data);
// True for 64 hex digits (what `sha256 = "..."` in a manifest must be).
bool is_sha256_hex(std::string_view s);

}  // namespace bpfmgr
