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

// Installs bpfmgr once per test program into a private prefix.
class Sdk : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new fs::path(fs::temp_directory_path() / unique_name("bpfmgr-sdk"));
    auto r = run({"cmake", "--install", build_dir(), "--prefix", prefix()});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_TRUE(fs::exists(prefix() + "/include/bpfmgr/plugin.hpp"));
    ASSERT_TRUE(fs::exists(prefix() + "/include/bpfmgr/plugin_api.h"));
    ASSERT_TRUE(fs::exists(prefix() + "/include/bpfmgr/bpf_common.h"));
    ASSERT_TRUE(fs::exists(prefix() + "/bin/bpfmgr"));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*work_, ec);
    delete work_;
  }
  static std::string prefix() { return (*work_ / "prefix").string(); }
  static std::string dir(const std::string& name) { return (*work_ / name).string(); }

  // Builds examples/execcount with extra CMake arguments.
  static void build_example(const std::string& build, std::vector<std::string> extra) {
    std::vector<std::string> argv{"cmake", "-S", source_dir() + "/examples/execcount",
                                  "-B", build, "-DCMAKE_PREFIX_PATH=" + prefix()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run(argv);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    r = run({"cmake", "--build", build});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_TRUE(fs::exists(build + "/bpfmgr-execcount.so"));
  }

  // Loads execcount with the installed bpfmgr, runs /bin/true five times
  // and checks both the map and the plugin's status counters.
  static void load_and_count(const std::string& plugin_path_line) {
    PinRoot root;
    auto manifest = write_temp_file("pin_root = \"" + root.path() + "\"\n" +
                                    plugin_path_line +
                                    "[[instance]]\nname = \"execs\"\n"
                                    "plugin = \"execcount\"\n");
    // Only the installed prefix's own search path, not the build tree's.
    ::unsetenv("BPFMGR_PLUGIN_PATH");
    auto r = run({prefix() + "/bin/bpfmgr", "load", manifest});
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
        run({prefix() + "/bin/bpfmgr", "status", "--json", "--pin-root", root.path()}).out);
    bool found = false;
    for (auto& c : status["instances"][0]["counters"])
      if (c["name"] == "execs.true") found = c["value"].get<std::uint64_t>() >= 5;
    EXPECT_TRUE(found) << status.dump(2);
    EXPECT_EQ(status["instances"][0]["details"]["commands seen"].is_string(), true)
        << status.dump(2);
    r = run({prefix() + "/bin/bpfmgr", "unpin", "--pin-root", root.path()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }

  static fs::path* work_;
};
fs::path* Sdk::work_ = nullptr;

bool needs(const std::string& lib, const std::string& so) {
  auto r = run({"readelf", "-d", so});
  return r.out.find("[" + lib) != std::string::npos;
}

// g++ and libstdc++, installed into the installed bpfmgr's plugin directory
// by the example's own install rule: found without any plugin_path.
TEST_F(Sdk, OutOfTreePluginWithGccInstallsAndLoads) {
  auto build = dir("build-gcc");
  build_example(build, {"-DCMAKE_CXX_COMPILER=g++"});
  auto so = build + "/bpfmgr-execcount.so";
  EXPECT_TRUE(needs("libstdc++", so));
  // Plugins link neither spdlog nor Boost.
  EXPECT_FALSE(needs("libspdlog", so));
  EXPECT_FALSE(needs("libboost", so));
  auto r = run({"cmake", "--install", build});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(fs::exists(prefix() + "/lib/bpfmgr/plugins/bpfmgr-execcount.so"));
  load_and_count("");
  fs::remove(prefix() + "/lib/bpfmgr/plugins/bpfmgr-execcount.so");
}

// clang++ with LLVM's libc++: a plugin on another C++ standard library than
// bpfmgr's (libstdc++) works, because only C crosses the boundary.
TEST_F(Sdk, OutOfTreePluginWithClangAndLibcxxLoads) {
  auto build = dir("build-libcxx");
  build_example(build, {"-DCMAKE_CXX_COMPILER=clang++", "-DCMAKE_CXX_FLAGS=-stdlib=libc++",
                        "-DCMAKE_MODULE_LINKER_FLAGS=-stdlib=libc++"});
  auto so = build + "/bpfmgr-execcount.so";
  EXPECT_TRUE(needs("libc++", so));
  EXPECT_FALSE(needs("libstdc++", so));
  load_and_count("plugin_path = [\"" + build + "\"]\n");
}

}  // namespace
}  // namespace bpfmgr::test
