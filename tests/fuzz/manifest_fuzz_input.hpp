// One fuzz input through the manifest parser and the resolver, shared by
// the libFuzzer target (manifest_fuzz.cpp) and the regression test that
// replays kept inputs in the normal build (core_fuzz_regression_test).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "diagnostics.hpp"
#include "manifest.hpp"
#include "plugins.hpp"
#include "resolve.hpp"

namespace bpfmgr::fuzz {

// Parses `data` as a manifest and resolves it against the plugins on
// BPFMGR_PLUGIN_PATH. Plugins named by path and the manifest's own
// plugin_path are left out: a fuzzer must not dlopen whatever library an
// input names. Whatever the input, this returns normally.
inline void run_manifest_input(const std::uint8_t* data, std::size_t size) {
  if (size > kMaxManifestBytes) return;  // parse_manifest_file refuses these
  std::string text(reinterpret_cast<const char*>(data), size);
  Diagnostics diags;
  auto m = parse_manifest_text(text, "fuzz.toml", "/nonexistent-fuzz-dir", diags);
  if (!m) return;
  m->plugin_path.clear();
  for (auto& inst : m->instances)
    if (inst.plugin.find('/') != std::string::npos ||
        inst.plugin.find(".so") != std::string::npos)
      return;
  static PluginRegistry registry;  // plugins stay loaded across inputs
  auto r = resolve_manifest(std::move(*m), registry, diags);
  (void)r;
  (void)diags.format();  // message building is part of what is fuzzed
}

}  // namespace bpfmgr::fuzz
