#include "pin_root_access.hpp"

#include <bpf/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>

#include "commands.hpp"
#include "errno_text.hpp"
#include "handles.hpp"
#include "pin_layout.hpp"

namespace bpfmgr {

namespace {

// Why `pin_root` cannot be read ("" when it can, or when it does not
// exist: then there is truly nothing under it). A non-root user must hear
// "permission denied", not "no instances".
std::string pin_root_unreadable(const std::string& pin_root) {
  if (::access(pin_root.c_str(), R_OK | X_OK) == 0 || errno == ENOENT) return "";
  int err = errno;
  return std::string(err == EACCES ? "permission denied: " : "") + "cannot read " +
         pin_root + ": " + errno_text(err) +
         (err == EACCES ? " (bpfmgr needs root to see pinned instances)" : "");
}

// Reading a pinned object needs privileges even where the directory is
// world-readable: a denied bpf() says so instead of "no state record".
// The first record that opens shows the privileges suffice.
std::string bpf_access_denied(const std::string& pin_root,
                              const std::vector<std::string>& names) {
  PinLayout layout(pin_root);
  for (auto& n : names) {
    Fd fd(bpf_obj_get(layout.instance(n).state().c_str()));
    if (fd) return "";
    if (errno == EPERM || errno == EACCES)
      return "permission denied: cannot open the pins under " + pin_root + ": " +
             errno_text(errno) + " (bpfmgr needs root, or CAP_BPF and CAP_SYS_ADMIN)";
  }
  return "";
}

// Every directory entry of a pin root: without privileges, bpfmgr's own
// instances cannot be told from foreign ones, so all are tried.
std::vector<std::string> entries_of(const std::string& pin_root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(pin_root, ec))
    out.push_back(e.path().filename().string());
  return out;
}

}  // namespace

int check_pin_root_access(const std::string& pin_root, const std::vector<std::string>& names) {
  std::string why = pin_root_problem(pin_root);
  if (!why.empty()) {
    std::cerr << "error: " << why << "\n";
    return kExitInvalid;
  }
  why = pin_root_unreadable(pin_root);
  std::error_code ec;
  if (why.empty() && std::filesystem::exists(pin_root, ec))
    why = bpf_access_denied(pin_root, names.empty() ? entries_of(pin_root) : names);
  if (why.empty()) return kExitOk;
  std::cerr << "error: " << why << "\n";
  return kExitFailed;
}

}  // namespace bpfmgr
