// One identity per loaded plugin (issue #17 item 1): a long-running
// process (serve) reloads its manifest's plugins again and again; no reuse
// of a descriptor number, an inode or a path may make one plugin answer for
// another file. Real plugin libraries, loaded through the core's registry.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>

#include "plugins.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/bpfmgr-identity-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), 0755);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Overwrites `to` in place: same inode, new bytes (what `cp` does).
void rewrite_in_place(const std::string& from, const std::string& to) {
  auto bytes = slurp(from);
  int fd = ::open(to.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), ssize_t(bytes.size()));
  ::close(fd);
}

TEST(PluginIdentity, ThousandReloadsOfAMultiPluginManifestNeverMixPlugins) {
  // Three plugins, as serve's reload sees them: a fresh registry per
  // reload (the old one, and its descriptors, gone), in an order that
  // rotates so descriptor numbers keep changing hands.
  const std::vector<std::pair<std::string, std::string>> plugins{
      {test_plugin_dir() + "/bpfmgr-testcount.so", "testcount"},
      {test_plugin_dir() + "/bpfmgr-ccount.so", "ccount"},
      {test_plugin_dir() + "/bpfmgr-testcgroup.so", "testcgroup"}};
  int wrong = 0, loads = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  for (int round = 0; round < 1000; ++round) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "round " << round;
    PluginRegistry registry;
    for (std::size_t k = 0; k < plugins.size(); ++k) {
      auto& [path, name] = plugins[(round + k) % plugins.size()];
      auto loaded = registry.load_file(path);
      ++loads;
      // What answers: the plugin's own get_info, and its BPF object.
      if (loaded->plugin->info().name != name || loaded->info.name != name) {
        ++wrong;
        ADD_FAILURE() << "round " << round << ": " << path << " answered as "
                      << loaded->plugin->info().name;
      }
    }
  }
  std::printf("plugin identity soak: %d reloads, %d plugin loads, %d wrong identities\n",
              1000, loads, wrong);
  EXPECT_EQ(wrong, 0);
}

TEST(PluginIdentity, FileReplacedInPlaceOrByRenameIsWhatAnswers) {
  TempDir dir;
  auto so = dir.path + "/bpfmgr-swap.so";
  fs::copy_file(test_plugin_dir() + "/bpfmgr-testcount.so", so);
  ::chmod(so.c_str(), 0755);
  PluginRegistry long_lived;
  EXPECT_EQ(long_lived.load_file(so)->plugin->info().name, "testcount");

  // In place: same inode, other bytes. glibc would hand back the library
  // already loaded from that inode; the sealed copy is a new one.
  rewrite_in_place(test_plugin_dir() + "/bpfmgr-ccount.so", so);
  auto again = long_lived.load_file(so);
  EXPECT_EQ(again->plugin->info().name, "ccount");
  EXPECT_EQ(again->sha256, long_lived.load_file(test_plugin_dir() + "/bpfmgr-ccount.so")->sha256);
  {
    PluginRegistry fresh;
    EXPECT_EQ(fresh.load_file(so)->plugin->info().name, "ccount");
  }

  // By rename (what package managers do): a new inode at the same path.
  auto tmp = dir.path + "/new.so";
  fs::copy_file(test_plugin_dir() + "/bpfmgr-testcgroup.so", tmp);
  ::chmod(tmp.c_str(), 0755);
  ASSERT_EQ(::rename(tmp.c_str(), so.c_str()), 0);
  EXPECT_EQ(long_lived.load_file(so)->plugin->info().name, "testcgroup");

  // And back to the first content: the library loaded earlier is reused
  // (same bytes, same code), still answering as itself.
  rewrite_in_place(test_plugin_dir() + "/bpfmgr-testcount.so", so);
  EXPECT_EQ(long_lived.load_file(so)->plugin->info().name, "testcount");

  // A hash expected for the old content refuses the new one.
  auto old_sha = long_lived.load_file(so)->sha256;
  rewrite_in_place(test_plugin_dir() + "/bpfmgr-ccount.so", so);
  EXPECT_THROW(long_lived.load_file(so, old_sha, "by the test"), PluginLoadError);
}

}  // namespace
}  // namespace bpfmgr::test
