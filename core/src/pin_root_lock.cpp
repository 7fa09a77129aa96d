#include "pin_root_lock.hpp"

#include <filesystem>

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// One pin root, one lock, however it is spelled (relative, "..", a
// trailing '/', a symlink to it).
std::string canonical_pin_root(const std::string& pin_root) {
  std::error_code ec;
  auto p = fs::weakly_canonical(fs::absolute(pin_root, ec), ec);
  if (ec) p = fs::absolute(pin_root).lexically_normal();
  auto s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

LockRole pin_root_role(std::string_view role) {
  if (role == "state") return LockRole::PinRootState;
  if (role == "serve") return LockRole::Serve;
  throw Error("no pin-root lock role '" + std::string(role) + "'");
}

}  // namespace

std::string pin_root_lock_path(const std::string& pin_root, std::string_view role) {
  return run_lock_path(pin_root_role(role), canonical_pin_root(pin_root));
}

std::string serve_record_path(const std::string& pin_root) {
  return run_record_path(LockRole::Serve, canonical_pin_root(pin_root));
}

pid_t serve_lock_holder(const std::string& pin_root) {
  return run_lock_holder(LockRole::Serve, canonical_pin_root(pin_root));
}

PinRootLock PinRootLock::acquire(const std::string& pin_root, LockWait wait,
                                 std::string_view role) {
  return PinRootLock(RunLock::acquire(pin_root_role(role), canonical_pin_root(pin_root), wait));
}

}  // namespace bpfmgr
