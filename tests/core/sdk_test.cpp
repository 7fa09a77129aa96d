// The SDK as a third-party author uses it: install bpfmgr to a prefix, build
// examples/execcount out of tree against it, and load the result.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(Sdk, OutOfTreePluginBuildsAgainstInstalledSdkAndLoads) {
  auto work = fs::temp_directory_path() / unique_name("bpfmgr-sdk");
  struct Cleanup {
    fs::path p;
    ~Cleanup() { fs::remove_all(p); }
  } cleanup{work};
  auto prefix = (work / "prefix").string();
  auto build = (work / "build").string();

  auto r = run({"cmake", "--install", build_dir(), "--prefix", prefix});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(fs::exists(prefix + "/include/bpfmgr/plugin.hpp"));
  ASSERT_TRUE(fs::exists(prefix + "/include/bpfmgr/bpf_common.h"));
  ASSERT_TRUE(fs::exists(prefix + "/bin/bpfmgr"));

  r = run({"cmake", "-S", source_dir() + "/examples/execcount", "-B", build,
           "-DCMAKE_PREFIX_PATH=" + prefix});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = run({"cmake", "--build", build});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(fs::exists(build + "/bpfmgr-execcount.so"));

  // The installed binary finds the installed plugins; the example comes
  // from the manifest's plugin_path.
  PinRoot root;
  auto manifest = write_temp_file("pin_root = \"" + root.path() +
                                  "\"\nplugin_path = [\"" + build +
                                  "\"]\n[[instance]]\nname = \"execs\"\n"
                                  "plugin = \"execcount\"\n");
  r = run({prefix + "/bin/bpfmgr", "load", manifest});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (int i = 0; i < 5; ++i) ASSERT_EQ(run({"/bin/true"}).exit_code, 0);

  auto dump = json::parse(run({"bpftool", "-j", "map", "dump", "pinned",
                               root.path() + "/execs/maps/execs"}).out);
  std::uint64_t execs = 0;
  for (auto& e : dump)
    if (e["formatted"]["key"]["comm"] == "true")
      execs = e["formatted"]["value"]["execs"].get<std::uint64_t>();
  EXPECT_GE(execs, 5u) << dump.dump();

  auto status = json::parse(
      run({prefix + "/bin/bpfmgr", "status", "--json", "--pin-root", root.path()}).out);
  bool found = false;
  for (auto& c : status["instances"][0]["counters"])
    if (c["name"] == "execs.true") found = c["value"].get<std::uint64_t>() >= 5;
  EXPECT_TRUE(found) << status.dump(2);
}

}  // namespace
}  // namespace bpfmgr::test
