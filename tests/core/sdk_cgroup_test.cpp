// The SDK's one cgroup rule (<bpfmgr/cgroup.hpp>), on the real cgroup2
// mount: what validate checks, load attaches to and plugins read ids and
// levels from. Needs root (it makes cgroups).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <bpfmgr/cgroup.hpp>
#include <bpfmgr/option_checks.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

namespace fs = std::filesystem;

// A scratch cgroup with a child "sub/leaf" two levels below it.
class CgroupRule : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(cgroup2_mount().empty()) << "no cgroup2 mount";
    leaf_ = cg_.path() + "/sub/leaf";
    ASSERT_EQ(::mkdir((cg_.path() + "/sub").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(leaf_.c_str(), 0755), 0);
    // The scratch cgroup's name relative to the mount.
    rel_ = cg_.path().substr(cgroup2_mount().size() + 1);
  }
  void TearDown() override {
    ::rmdir(leaf_.c_str());
    ::rmdir((cg_.path() + "/sub").c_str());
  }
  static std::uint64_t inode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_ino;
  }
  Cgroup resolved(const std::string& value) {
    Cgroup c;
    auto why = resolve_cgroup(value, c);
    EXPECT_EQ(why, "") << "'" << value << "'";
    return c;
  }
  std::string refused(const std::string& value, const std::string& mount = cgroup2_mount()) {
    Cgroup c;
    auto why = resolve_cgroup(value, c, nullptr, mount);
    EXPECT_NE(why, "") << "'" << value << "' resolved to " << c.path;
    // validate says the same, word for word.
    if (mount == cgroup2_mount()) {
      EXPECT_EQ(check::cgroup_path_problem(value), why);
    }
    return why;
  }

  ScopedCgroup cg_;
  std::string leaf_, rel_;
};

TEST_F(CgroupRule, RootIsEmptySlashOrTheMountItself) {
  auto root = cgroup2_mount();
  for (auto v : {std::string(""), std::string("/"), std::string("//"), root, root + "/"}) {
    auto c = resolved(v);
    EXPECT_EQ(c.path, root) << "'" << v << "'";
    EXPECT_EQ(c.relative, "");
    EXPECT_EQ(c.level, 0u);
    EXPECT_EQ(c.id, inode(root));
  }
}

TEST_F(CgroupRule, AbsoluteUnderTheMountIsTakenAsItIs) {
  auto c = resolved(leaf_);
  EXPECT_EQ(c.path, leaf_);
  EXPECT_EQ(c.relative, rel_ + "/sub/leaf");
  EXPECT_EQ(c.level, 3u);  // scratch/sub/leaf
  EXPECT_EQ(c.id, inode(leaf_));
  // Trailing and doubled slashes do not change the cgroup.
  EXPECT_EQ(resolved(leaf_ + "/").path, leaf_);
  EXPECT_EQ(resolved(cg_.path() + "//sub/./leaf").path, leaf_);
}

// The case of issue 20: "/foo" is <mount>/foo for validate and load alike
// (tcpint's load took it as /foo).
TEST_F(CgroupRule, RelativeWithOrWithoutSlashIsUnderTheMount) {
  for (auto v : {rel_ + "/sub/leaf", "/" + rel_ + "/sub/leaf"}) {
    auto c = resolved(v);
    EXPECT_EQ(c.path, leaf_) << v;
    EXPECT_EQ(c.level, 3u) << v;
    EXPECT_EQ(c.id, inode(leaf_)) << v;
  }
  // The mount is matched by whole components: <mount>x is not under it.
  // (so it is looked for under the mount, where it is not)
  auto why = refused(cgroup2_mount() + "x/" + rel_);
  EXPECT_EQ(why.rfind("cgroup " + cgroup2_mount() + "/", 0), 0u) << why;
  EXPECT_NE(why.find("No such file or directory (create it before loading)"),
            std::string::npos)
      << why;
}

TEST_F(CgroupRule, DotDotAndNulAreRefusedBeforeAnythingIsOpened) {
  for (auto v : {cg_.path() + "/sub/..", std::string("../.."), rel_ + "/../" + rel_,
                 std::string("..")})
    EXPECT_EQ(refused(v), "'..' is not allowed in a cgroup path; name the cgroup itself") << v;
  EXPECT_EQ(refused(std::string("a\0b", 3)), "a cgroup path cannot contain a NUL byte");
}

TEST_F(CgroupRule, MissingAndNonDirectoriesAreNamed) {
  EXPECT_EQ(refused(cg_.path() + "/missing/x"),
            "cgroup " + cg_.path() + "/missing: No such file or directory "
            "(create it before loading)");
  EXPECT_EQ(refused(cg_.path() + "/cgroup.procs"), cg_.path() + "/cgroup.procs is not a directory");
}

// cgroupfs holds no symlinks, so the rule is shown on a directory that
// does: a link to a real cgroup is refused, not followed.
TEST_F(CgroupRule, SymlinksAreRefusedNotFollowed) {
  auto dir = fs::temp_directory_path() / unique_name("bpfmgr-cgroup-rule");
  fs::create_directories(dir / "real");
  fs::create_symlink(leaf_, dir / "to-leaf");
  fs::create_symlink(dir / "real", dir / "to-real");
  struct Cleanup {
    fs::path d;
    ~Cleanup() { fs::remove_all(d); }
  } cleanup{dir};
  EXPECT_EQ(refused("to-leaf", dir.string()),
            (dir / "to-leaf").string() + " is a symbolic link; name the cgroup itself");
  EXPECT_EQ(refused("to-real/x", dir.string()),
            (dir / "to-real").string() + " is a symbolic link; name the cgroup itself");
  // The directory itself is there, but is no cgroup v2.
  EXPECT_EQ(refused("real", dir.string()), (dir / "real").string() + " is not a cgroup v2 directory");
}

TEST_F(CgroupRule, DirectoriesOfOtherFilesystemsAreNotCgroups) {
  // tmpfs, or a cgroup v1 hierarchy where one is mounted (hybrid hosts).
  EXPECT_EQ(refused("", "/dev/shm"), "/dev/shm is not a cgroup v2 directory");
  for (auto v1 : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"})
    if (fs::is_directory(v1) && !fs::equivalent(v1, cgroup2_mount())) {
      EXPECT_EQ(refused("", v1), std::string(v1) + " is not a cgroup v2 directory");
    }
  EXPECT_EQ(refused("x", ""), "no cgroup v2 mount found in /proc/self/mounts");
}

// The descriptor handed over is the checked directory, open until closed.
TEST_F(CgroupRule, HandsOverTheDirectoryItChecked) {
  Cgroup c;
  int fd = -1;
  ASSERT_EQ(resolve_cgroup(rel_ + "/sub/leaf", c, &fd), "");
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_ino, c.id);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  ::close(fd);
  // No descriptor on failure.
  fd = -1;
  EXPECT_NE(resolve_cgroup(rel_ + "/none", c, &fd), "");
  EXPECT_EQ(fd, -1);
}

}  // namespace
}  // namespace bpfmgr::test
