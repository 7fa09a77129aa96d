// Checks plugins share for option values that name host things (cgroup
// paths), so that `bpfmgr validate` refuses what `load` would fail on, with
// the same words in every plugin. Header-only, standard C++ and POSIX: a
// plugin calls one function from its validate() and turns a non-empty
// answer into an OptionProblem.
#pragma once

#include <string>

#include <bpfmgr/cgroup.hpp>

namespace bpfmgr::check {

using bpfmgr::cgroup2_mount;
using bpfmgr::kCgroup2Magic;

// Why `value` cannot name a cgroup v2 directory, or "" when it does, by the
// rule of <bpfmgr/cgroup.hpp> (the one `load` attaches by: resolve_cgroup).
inline std::string cgroup_path_problem(const std::string& value) {
  Cgroup cgroup;
  return resolve_cgroup(value, cgroup);
}

}  // namespace bpfmgr::check
