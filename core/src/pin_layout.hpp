// Every path under a pin root, in one place: nobody else concatenates them.
//
//   <root>/<instance>/state           state record (one-entry array map)
//   <root>/<instance>/state-new       its next version, until renamed over it
//   <root>/<instance>/maps/<map>      the instance's own maps
//   <root>/<instance>/progs/<prog>    loaded programs
//   <root>/<instance>/links/<link>    links; removing the pin detaches
//   <root>/_staging-<instance>/       same shape: a load in progress
//   <root>/_journal                   intent of a commit in progress
//
// bpffs refuses names containing '.', and instance names cannot start with
// '_', so the underscore names never collide with instances.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <bpfmgr/pin_paths.hpp>  // the names, shared with harnesses (SDK)

namespace bpfmgr {

// One instance's directory (final or staging) and the pins in it.
struct InstancePaths {
  std::string dir;

  std::string state() const { return pin_paths::state(dir); }
  // A record's next version, pinned here and then renamed over state():
  // present only when a crash came between the two.
  std::string state_replacement() const { return dir + "/" + std::string(kStateReplacement); }
  static constexpr std::string_view kStateReplacement = "state-new";
  std::string maps_dir() const { return pin_paths::kind_dir(dir, PinKind::Map); }
  std::string progs_dir() const { return pin_paths::kind_dir(dir, PinKind::Prog); }
  std::string links_dir() const { return pin_paths::kind_dir(dir, PinKind::Link); }
  std::string map(std::string_view name) const { return pin(PinKind::Map, name); }
  std::string prog(std::string_view name) const { return pin(PinKind::Prog, name); }
  std::string link(std::string_view name) const { return pin(PinKind::Link, name); }
  std::string pin(PinKind kind, std::string_view name) const {
    return pin_paths::pin(dir, kind, name);
  }
};

// Why `name` cannot name a pin ("" when it can): a plain file name, no '/'.
std::string pin_name_problem(std::string_view name);

class PinLayout {
 public:
  // `root` must be absolute; a trailing '/' is dropped.
  explicit PinLayout(std::string root);

  const std::string& root() const { return root_; }
  InstancePaths instance(std::string_view name) const {
    return {pin_paths::instance_dir(root_, name)};
  }
  InstancePaths staging(std::string_view name) const {
    return {pin_paths::instance_dir(root_, std::string(kStagingPrefix) + std::string(name))};
  }
  std::string journal() const { return root_ + "/" + std::string(kJournalName); }

  // The instance a directory entry of the root stages, if it is a staging name.
  static std::optional<std::string> staged_instance(std::string_view entry);

  static constexpr std::string_view kStagingPrefix = "_staging-";
  static constexpr std::string_view kJournalName = "_journal";

 private:
  std::string root_;
};

// Why `root` cannot be a pin root ("" when it can): it must be absolute,
// and, when it exists, a real directory (not a symlink) on a bpf filesystem.
// A path that does not exist yet is checked through its nearest existing
// parent, which must be on bpffs.
std::string pin_root_problem(const std::string& root);

}  // namespace bpfmgr
