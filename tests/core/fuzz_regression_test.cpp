// Replays, in the normal build, every input the manifest fuzzer ever
// crashed on (tests/fuzz/regressions/) and its seeds (the example
// manifests), through the same parse + resolve path as the fuzz target.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "manifest_fuzz_input.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {
namespace fs = std::filesystem;

std::vector<fs::path> inputs() {
  std::vector<fs::path> out;
  for (auto dir : {"/tests/fuzz/regressions", "/examples/manifests"})
    for (auto& e : fs::directory_iterator(source_dir() + dir))
      if (e.is_regular_file() && e.path().filename() != "README.md") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FuzzRegressions, EveryKeptInputParsesAndResolvesWithoutCrashing) {
  ::setenv("BPFMGR_PLUGIN_PATH", (test_plugin_dir() + ":" + plugin_dir()).c_str(), 1);
  auto all = inputs();
  ASSERT_GE(all.size(), 2u);
  for (auto& p : all) {
    SCOPED_TRACE(p.string());
    std::ifstream in(p, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fuzz::run_manifest_input(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
  }
}

}  // namespace
}  // namespace bpfmgr::test
