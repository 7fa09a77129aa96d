// Trust for plugin files (and the benchmark harnesses `bpfmgr bench` runs):
// bpfmgr runs as root and dlopen() runs a library's constructors, so no code
// is loaded or run that someone other than root (or the
// user running bpfmgr) could have written or swapped. The rules are sshd's
// StrictModes and sudo's: the file and every directory above it are owned by
// root (or the effective user) and writable by nobody else. The file is
// checked through the descriptor it is then loaded from (/proc/self/fd/N),
// so a swap between check and load cannot win. See docs/safety.md.
#pragma once

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

// A plugin file opened and checked, ready to dlopen through its descriptor.
struct TrustedPluginFile {
  Fd fd;               // O_RDONLY|O_NOFOLLOW, checked with fstat
  std::string path;    // canonical path, for messages and the state record
  std::string sha256;  // of the content read through `fd`
  // "/proc/self/fd/N": dlopen() this, never `path`.
  std::string load_path() const;
};

// Opens `path` and checks it and every directory above it; throws
// PluginTrustError saying which component is wrong and why.
TrustedPluginFile open_trusted_plugin(const std::string& path);

// The same rules for any file bpfmgr runs (a benchmark harness): opened
// O_RDONLY through a checked walk; run it through the descriptor
// (fexecve). `action` words the refusal: "refusing to <action> <path>: ...".
struct TrustedFile {
  Fd fd;
  std::string path;  // canonical
};
TrustedFile open_trusted_file(const std::string& path, const std::string& action);

// Says where the hash of a state record comes from, in messages.
inline constexpr const char* kRecordedHashOrigin =
    "as recorded when the instance was loaded; `bpfmgr load` the manifest "
    "again to run the new file";

// Throws PluginTrustError when `expected_sha256` is not empty and differs
// from the file's; `why` says what the expected hash came from.
void check_plugin_hash(const std::string& path, const std::string& actual_sha256,
                       const std::string& expected_sha256, const std::string& why);

// A relative `plugin = "..."` resolved against the manifest's directory;
// throws PluginTrustError when the result lies outside that directory
// (after resolving symlinks).
std::string resolve_relative_plugin(const std::string& manifest_dir,
                                    const std::string& relative);

// BPFMGR_PLUGIN_PATH must not silently replace a plugin of the same name
// from a built-in directory (beside the binary, the install prefix): throws
// PluginTrustError naming both files when `found` (in `env_dirs`) shadows
// one in `builtin_dirs`.
void check_env_shadowing(const std::string& name, const std::string& found,
                         const std::vector<std::string>& env_dirs,
                         const std::vector<std::string>& builtin_dirs);

// Lowercase hex sha256 of a byte string (OpenSSL libcrypto).
std::string sha256_hex(std::string_view data);
// True for 64 hex digits (what `sha256 = "..."` in a manifest must be).
bool is_sha256_hex(std::string_view s);

}  // namespace bpfmgr
