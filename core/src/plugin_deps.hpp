// Trust for a plugin's whole dependency closure, before dlopen() runs any
// constructor: each DT_NEEDED library is looked up the way the dynamic
// loader would (DT_RPATH, LD_LIBRARY_PATH when not root, DT_RUNPATH, the
// directories of /etc/ld.so.conf, the system directories), and every
// directory searched up to the one it is found in, and the file itself,
// must pass the plugin's own owner and mode rules (plugin_trust.hpp). Then
// the same for the dependency's dependencies. A library this process
// started with is not looked up: the loader reuses the loaded one. See
// docs/safety.md.
#pragma once

#include <string>

namespace bpfmgr {

// `fd`: the plugin's bytes (its sealed copy); `path`: its canonical path.
// Throws PluginTrustError for a directory or file others could write,
// PluginLoadError for a dependency that is missing (naming where it was
// searched) or that only the plugin's $ORIGIN would find.
void check_dependency_closure(int fd, const std::string& path);

}  // namespace bpfmgr
