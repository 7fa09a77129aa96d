// Root-safety of the core: one lock per pin root, what bpfmgr owns under a
// pin root and what it leaves alone, crash recovery, signals. Real kernel,
// real processes; SIGKILL and delays injected at exact syscalls with strace.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "pin_root_lock.hpp"
#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string header(const std::string& pin_root) {
  return "pin_root = \"" + pin_root + "\"\nplugin_path = [\"" + test_plugin_dir() +
         "\"]\n";
}

std::string counter_instance(const std::string& name, long tgid = 1) {
  return "\n[[instance]]\nname = \"" + name +
         "\"\nplugin = \"testcount\"\n[instance.options]\ntgid = " +
         std::to_string(tgid) + "\n";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Runs `body` in a forked child with a private mount namespace (so mounts
// over /run/bpfmgr are seen by nobody else); returns the child's exit code.
template <class F>
int in_private_mount_ns(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      ::_exit(100);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// ---------------------------------------------------------------- the lock

TEST(PinRootLock, NoWaitNamesTheHolderAndTouchesNothing) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  {
    auto held = PinRootLock::acquire(root.path(), LockWait::Fail);
    auto r = run_bpfmgr({"load", "--no-wait", manifest});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "PID " + std::to_string(::getpid()))) << r.err;
    EXPECT_TRUE(contains(r.err, "nothing was done")) << r.err;
    EXPECT_TRUE(pins_under(root.path()).empty());
    auto u = run_bpfmgr({"unpin", "--no-wait", "--pin-root", root.path()});
    EXPECT_EQ(u.exit_code, 1);
    EXPECT_TRUE(contains(u.err, "PID " + std::to_string(::getpid()))) << u.err;
  }
  auto r = run_bpfmgr({"load", "--no-wait", manifest});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(PinRootLock, LoadWaitsForTheHolderThenRuns) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  auto held = std::make_unique<PinRootLock>(
      PinRootLock::acquire(root.path(), LockWait::Fail));
  auto waiting = std::async(std::launch::async,
                            [&] { return run_bpfmgr({"load", manifest}); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(700)),
            std::future_status::timeout);
  EXPECT_FALSE(fs::exists(root.path() + "/a"));
  held.reset();
  auto r = waiting.get();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "waiting for PID " + std::to_string(::getpid())))
      << r.err;
  EXPECT_TRUE(fs::exists(root.path() + "/a/state"));
}

TEST(PinRootLock, SecondHolderOfARoleFailsAtOnceNamingTheFirst) {
  auto root = "/sys/fs/bpf/" + unique_name("lockrole");
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto lock = PinRootLock::acquire(root, LockWait::Fail, "serve");
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    (void)!::read(done[0], &c, 1);
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  try {
    PinRootLock::acquire(root, LockWait::Fail, "serve");
    ADD_FAILURE() << "a second serve lock was granted";
  } catch (const LockBusy& e) {
    EXPECT_EQ(e.holder, child);
    EXPECT_TRUE(contains(e.what(), "PID " + std::to_string(child))) << e.what();
  }
  // Roles are independent: the state lock is free while serve is held.
  EXPECT_NO_THROW(PinRootLock::acquire(root, LockWait::Fail, "state"));
  ::write(done[1], &c, 1);
  ::waitpid(child, nullptr, 0);
  // Threads of one process exclude each other too.
  auto first = PinRootLock::acquire(root, LockWait::Fail);
  EXPECT_THROW(PinRootLock::acquire(root, LockWait::Fail), LockBusy);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
}

TEST(PinRootLock, RefusesUnsafeLockDirectoryAndSymlinks) {
  auto root = "/sys/fs/bpf/" + unique_name("lockdir");
  { PinRootLock::acquire(root, LockWait::Fail); }  // creates /run/bpfmgr
  auto error_of = [&] {
    try {
      PinRootLock::acquire(root, LockWait::Fail);
      return std::string("granted");
    } catch (const LockBusy& e) {
      return std::string("busy: ") + e.what();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  // Writable by others: refused before any file in it is opened.
  EXPECT_EQ(in_private_mount_ns([&] {
              if (::mount("tmpfs", kLockDir, "tmpfs", 0, "mode=0777") != 0) return 101;
              auto e = error_of();
              std::fprintf(stderr, "0777: %s\n", e.c_str());
              return contains(e, "writable by group or others") ? 0 : 1;
            }),
            0);
  // The lock file a symlink (to a file an attacker wants opened): refused.
  EXPECT_EQ(in_private_mount_ns([&] {
              if (::mount("tmpfs", kLockDir, "tmpfs", 0, "mode=0755") != 0) return 101;
              auto target = std::string(kLockDir) + "/target";
              if (::symlink(target.c_str(), pin_root_lock_path(root, "state").c_str()) != 0)
                return 102;
              auto e = error_of();
              std::fprintf(stderr, "symlink: %s\n", e.c_str());
              return contains(e, "symlink") && !fs::exists(target) ? 0 : 1;
            }),
            0);
  // A read-only /run is said as such, never as "held by another".
  EXPECT_EQ(in_private_mount_ns([&] {
              if (::mount("tmpfs", kLockDir, "tmpfs", MS_RDONLY, "mode=0755") != 0)
                return 101;
              auto e = error_of();
              std::fprintf(stderr, "read-only: %s\n", e.c_str());
              return contains(e, "Read-only file system") && !contains(e, "busy") ? 0 : 1;
            }),
            0);
}

TEST(PinRootLock, ConcurrentLoadsOfTwoManifestsBothLand) {
  // Before the lock, the second load deleted the first's staging while the
  // first was in its commit: "loaded: a" with empty directories. Every
  // rename of the first load is slowed by 100 ms to hold it in its commit.
  PinRoot root;
  auto first = write_temp_file(header(root.path()) + counter_instance("a") +
                               counter_instance("b"));
  auto second = write_temp_file(header(root.path()) + counter_instance("c"));
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  auto slow = std::async(std::launch::async, [&] {
    return run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                "inject=rename:delay_enter=100000", bpfmgr_binary(), "load", first});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto fast = run_bpfmgr({"load", second});
  auto s = slow.get();
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(fast.exit_code, 0) << fast.err;
  // One of them met the other's lock (which one depends on timing).
  EXPECT_TRUE(contains(s.err + fast.err, "waiting for PID")) << s.err << fast.err;
  auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
  ASSERT_EQ(st["instances"].size(), 3u) << st.dump(2);
  for (auto& inst : st["instances"]) {
    EXPECT_EQ(inst["complete"], true) << inst.dump(2);
    for (auto& p : inst["programs"]) EXPECT_FALSE(p.contains("error")) << inst.dump(2);
  }
}

}  // namespace
}  // namespace bpfmgr::test
