// Root-safety of the core: one lock per pin root, what bpfmgr owns under a
// pin root and what it leaves alone, crash recovery, signals. Real kernel,
// real processes; SIGKILL and delays injected at exact syscalls with strace.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "pin_root_lock.hpp"
#include "pin_txn.hpp"
#include "state.hpp"
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
  // The child left without letting go (_exit): its file stays until the
  // next holder of the lock lets go.
  EXPECT_TRUE(fs::exists(pin_root_lock_path(root, "serve")));
  { auto next = PinRootLock::acquire(root, LockWait::Fail, "serve"); }
  EXPECT_FALSE(fs::exists(pin_root_lock_path(root, "serve")));
  // Threads of one process exclude each other too.
  auto first = PinRootLock::acquire(root, LockWait::Fail);
  EXPECT_THROW(PinRootLock::acquire(root, LockWait::Fail), LockBusy);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
}

TEST(PinRootLock, HoldersRemoveTheirLockFileAndStillExcludeEachOther) {
  // Each holder removes the lock file as it lets go. A process that opened
  // the removed file, or waited on it, must notice and lock the new one:
  // otherwise two processes hold "the" lock at once. Four processes take
  // it in turn, each making a marker directory only one may have.
  auto root = "/sys/fs/bpf/" + unique_name("lockchurn");
  auto marker = fs::temp_directory_path() / unique_name("bpfmgr-lock-holder");
  constexpr int kProcesses = 4, kRounds = 400;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int overlaps = 0;
      for (int i = 0; i < kRounds; ++i) {
        auto lock = PinRootLock::acquire(root, LockWait::Block);
        if (::mkdir(marker.c_str(), 0700) != 0) ++overlaps;
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        ::rmdir(marker.c_str());
      }
      ::_exit(overlaps == 0 ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "two processes held the pin-root lock at once (status " << status << ")";
  }
  EXPECT_FALSE(fs::exists(pin_root_lock_path(root, "state")));

  // A load and an unpin leave no lock file behind either.
  PinRoot pinned;
  auto manifest = write_temp_file(header(pinned.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  EXPECT_FALSE(fs::exists(pin_root_lock_path(pinned.path(), "state")));
  ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", pinned.path(), "--quiet"}).exit_code, 0);
  EXPECT_FALSE(fs::exists(pin_root_lock_path(pinned.path(), "state")));
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
  // mkdir and rename of the first load (staging and commit) is slowed by
  // 200 ms so the second arrives while the first holds the pin root.
  PinRoot root;
  auto first = write_temp_file(header(root.path()) + counter_instance("a") +
                               counter_instance("b"));
  auto second = write_temp_file(header(root.path()) + counter_instance("c"));
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  auto slow = std::async(std::launch::async, [&] {
    return run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                "inject=mkdir,rename:delay_enter=200000", bpfmgr_binary(), "load", first});
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

// -------------------------------------------------------------- ownership

json status_of(const std::string& pin_root) {
  auto r = run_bpfmgr({"status", "--json", "--pin-root", pin_root});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

bool has_foreign(const json& st, const std::string& name) {
  for (auto& f : st["foreign"])
    if (f["name"] == name) return true;
  return false;
}

TEST(Ownership, ForeignPinsAndSymlinksAreNeverTouched) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  // Another tool's map in a directory of its own, a symlink to an ordinary
  // directory holding a links/ subtree, a map pinned loose in the root.
  ASSERT_EQ(::mkdir((root.path() + "/foreign").c_str(), 0700), 0);
  auto mk = run({"bpftool", "map", "create", root.path() + "/foreign/m", "type", "array",
                 "key", "4", "value", "4", "entries", "1", "name", "foreign_m"});
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  auto outside = fs::temp_directory_path() / unique_name("bpfmgr-outside");
  fs::create_directories(outside / "links");
  std::ofstream(outside / "links" / "precious") << "keep me";
  fs::create_directory_symlink(outside, root.path() + "/evil");
  mk = run({"bpftool", "map", "create", root.path() + "/loose", "type", "array",
            "key", "4", "value", "4", "entries", "1", "name", "foreign_l"});
  ASSERT_EQ(mk.exit_code, 0) << mk.err;

  auto st = status_of(root.path());
  EXPECT_EQ(st["instances"].size(), 1u) << st.dump(2);
  for (auto name : {"foreign", "evil", "loose"}) EXPECT_TRUE(has_foreign(st, name)) << name;

  // A manifest naming a foreign directory is refused before anything moves.
  auto clash = write_temp_file(header(root.path()) + counter_instance("foreign"));
  auto r = run_bpfmgr({"load", clash});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "not bpfmgr's")) << r.err;
  r = run_bpfmgr({"unpin", "--pin-root", root.path(), "evil"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "not bpfmgr's")) << r.err;

  r = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "unpinned: a")) << r.out;
  EXPECT_TRUE(contains(r.out, "left alone")) << r.out;
  EXPECT_FALSE(fs::exists(root.path() + "/a"));
  EXPECT_TRUE(fs::exists(root.path() + "/foreign/m"));
  EXPECT_TRUE(fs::exists(root.path() + "/loose"));
  EXPECT_TRUE(fs::is_symlink(root.path() + "/evil"));
  EXPECT_TRUE(fs::exists(outside / "links" / "precious"));
  fs::remove(root.path() + "/evil");
  fs::remove_all(outside);
}

TEST(Ownership, UnpinAtTheBpffsRootRemovesOnlyBpfmgrInstances) {
  // In a private mount namespace with a fresh bpffs at /sys/fs/bpf, so the
  // host's pins (other engineers' tests included) are not in reach.
  auto manifest = write_temp_file(header("/sys/fs/bpf") + counter_instance("mine"));
  std::string script =
      "set -e; mount -t bpf bpf /sys/fs/bpf; "
      "mkdir /sys/fs/bpf/othertool; "
      "bpftool map create /sys/fs/bpf/othertool/m type array key 4 value 4 entries 1 name other_m; "
      "bpftool map create /sys/fs/bpf/loose type array key 4 value 4 entries 1 name other_l; " +
      bpfmgr_binary() + " --log-level error load " + manifest + " >/dev/null; " +
      "test -e /sys/fs/bpf/mine/state; " + bpfmgr_binary() +
      " unpin --pin-root /sys/fs/bpf; "
      "test ! -e /sys/fs/bpf/mine; test -e /sys/fs/bpf/othertool/m; test -e /sys/fs/bpf/loose; "
      "echo survived";
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto r = run({"unshare", "-m", "--propagation", "private", "sh", "-c", script});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "unpinned: mine")) << r.out;
  EXPECT_TRUE(contains(r.out, "survived")) << r.out << r.err;
}

TEST(Ownership, LoadRemovesOnlyInstancesOfItsOwnManifest) {
  PinRoot root;
  auto first = write_temp_file(header(root.path()) + counter_instance("a"));
  auto second_text = header(root.path()) + counter_instance("b") + counter_instance("c");
  auto second = write_temp_file(second_text);
  ASSERT_EQ(run_bpfmgr({"load", first}).exit_code, 0);
  ASSERT_EQ(run_bpfmgr({"load", second}).exit_code, 0);
  // The second manifest drops c: c goes, a (another manifest's) stays.
  std::ofstream(second) << header(root.path()) + counter_instance("b");
  auto r = run_bpfmgr({"load", second});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "removed: c")) << r.out;
  EXPECT_TRUE(fs::exists(root.path() + "/a/state"));
  EXPECT_TRUE(fs::exists(root.path() + "/b/state"));
  EXPECT_FALSE(fs::exists(root.path() + "/c"));
}

// Overwrites a state record with text that is not JSON: still bpfmgr's
// map, unreadable.
void damage_record(const std::string& state_pin) {
  int fd = bpf_obj_get(state_pin.c_str());
  ASSERT_GE(fd, 0);
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  ASSERT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
  std::vector<char> value(info.value_size, 0);
  std::uint32_t n = 5, key = 0;
  std::memcpy(value.data(), &n, 4);
  std::memcpy(value.data() + 4, "{{{{{", 5);
  EXPECT_EQ(bpf_map_update_elem(fd, &key, value.data(), BPF_ANY), 0);
  ::close(fd);
}

TEST(Ownership, CorruptRecordIsShownThenCleanedOrReplaced) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  damage_record(root.path() + "/a/state");
  auto st = status_of(root.path());
  ASSERT_EQ(st["instances"].size(), 1u);
  EXPECT_TRUE(contains(st["instances"][0].value("error", ""), "damaged")) << st.dump(2);
  auto r = run_bpfmgr({"load", manifest});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "repaired: a")) << r.err;
  st = status_of(root.path());
  EXPECT_EQ(st["instances"][0]["complete"], true) << st.dump(2);
  damage_record(root.path() + "/a/state");
  r = run_bpfmgr({"unpin", "--pin-root", root.path(), "a"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(pins_under(root.path()).empty());
}

// A record outgrown by its next version is replaced by a rename; a crash
// between the replacement's pin and the rename leaves state-new beside the
// record. Unpin removes it when it is a record map, and leaves anything
// else there (and so the directory) alone, saying so.
TEST(Ownership, ARecordReplacementACrashLeftIsRemovedOnlyWhenItIsOne) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  InstancePaths a{root.path() + "/a"}, scratch{root.path() + "/scratch"};
  auto rec = read_state(a.state());
  ASSERT_TRUE(rec);
  ASSERT_EQ(::mkdir(scratch.dir.c_str(), 0700), 0);
  write_state(scratch, *rec);  // a record map, moved into place by hand
  ASSERT_EQ(::rename(scratch.state().c_str(), a.state_replacement().c_str()), 0);
  ASSERT_EQ(::rmdir(scratch.dir.c_str()), 0);
  EXPECT_EQ(status_of(root.path())["instances"][0].value("error", ""), "");
  auto r = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(pins_under(root.path()).empty());

  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  int foreign = bpf_map_create(BPF_MAP_TYPE_ARRAY, "not_a_record", 4, 8, 1, nullptr);
  ASSERT_GE(foreign, 0);
  ASSERT_EQ(bpf_obj_pin(foreign, a.state_replacement().c_str()), 0);
  ::close(foreign);
  r = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "did not make")) << r.err;
  EXPECT_TRUE(fs::exists(a.state_replacement()));
  ::unlink(a.state_replacement().c_str());
  EXPECT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
}

// ---------------------------------------------------------- pin root checks

TEST(PinRootCheck, NonBpffsAndRelativePinRootsAreRefusedUpFront) {
  auto outside = fs::path("/var/tmp") / unique_name("bpfmgr-notbpf");
  auto manifest = write_temp_file(header(outside.string()) + counter_instance("a"));
  auto r = run_bpfmgr({"load", manifest});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "not be on a bpf filesystem")) << r.err;
  EXPECT_FALSE(fs::exists(outside));  // nothing left behind
  auto ok_manifest = write_temp_file(header("/sys/fs/bpf/x") + counter_instance("a"));
  r = run_bpfmgr({"load", "--pin-root", "relative/root", ok_manifest});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "absolute path")) << r.err;
  EXPECT_FALSE(fs::exists("relative"));
  // Every command that reads a pin root applies the same rule (README's
  // exit 2), before it looks for instances or takes a lock.
  for (auto cmd : std::vector<std::vector<std::string>>{
           {"unpin", "--pin-root", "/var/tmp"},
           {"status", "--pin-root", "/var/tmp"},
           {"events", "a", "--pin-root", "/var/tmp", "--count", "1"},
           {"unpin", "--pin-root", "relative/root"},
           {"status", "--pin-root", "relative/root"}}) {
    r = run_bpfmgr(cmd);
    EXPECT_EQ(r.exit_code, 2) << cmd[0] << " " << cmd.back() << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "bpf filesystem") || contains(r.err, "absolute path"))
        << r.err;
  }
}

// -------------------------------------------------------- crash consistency

struct Kernel {
  // Programs the pin root's cgroup links and instances run, per instance:
  // the pinned program ids vs what the links run, from bpftool.
  static std::string disagreement(const std::string& pin_root) {
    auto st = json::parse(run_bpfmgr({"status", "--json", "--pin-root", pin_root}).out);
    std::string out;
    if (!st["interrupted"].empty()) out += "interrupted loads left; ";
    if (st["journal"] == true) out += "journal left; ";
    for (auto& i : st["instances"]) {
      if (i.contains("error")) out += i["instance"].get<std::string>() + ": " + i["error"].get<std::string>() + "; ";
      if (i.contains("drift")) out += i["instance"].get<std::string>() + ": " + i["drift"].get<std::string>() + "; ";
      if (i.value("complete", false) != true) out += i["instance"].get<std::string>() + " incomplete; ";
      for (auto& l : i["links"]) {
        auto pinned = run({"bpftool", "-j", "link", "show", "pinned", l["pin"].get<std::string>()});
        auto prog = run({"bpftool", "-j", "prog", "show", "pinned",
                         pin_root + "/" + i["instance"].get<std::string>() + "/progs/" +
                             l["prog"].get<std::string>()});
        if (pinned.exit_code || prog.exit_code) {
          out += "pin missing for " + l["pin"].get<std::string>() + "; ";
          continue;
        }
        if (json::parse(pinned.out)["prog_id"] != json::parse(prog.out)["id"])
          out += "link " + l["pin"].get<std::string>() + " runs another program; ";
      }
    }
    for (auto& p : pins_under(pin_root))
      if (contains(p, "/_staging-") || contains(p, "/_journal")) out += "leftover " + p + "; ";
    return out;
  }
};

std::string slurp_file(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// How many times `cmd` makes each of `syscalls` (strace -f), for choosing
// kill points.
std::map<std::string, int> syscall_counts(const std::vector<std::string>& syscalls,
                                          const std::vector<std::string>& cmd) {
  auto log = write_temp_file("");
  std::string list;
  for (auto& sc : syscalls) list += (list.empty() ? "" : ",") + sc;
  std::vector<std::string> argv{"strace", "-f", "-qq", "-o", log, "-e", "trace=" + list,
                                "-e", "signal=none"};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  run(argv);
  std::ifstream in(log);
  std::map<std::string, int> n;
  for (std::string line; std::getline(in, line);) {
    if (contains(line, "resumed>")) continue;
    for (auto& sc : syscalls)
      if (contains(line, " " + sc + "(") || line.rfind(sc + "(", 0) == 0) ++n[sc];
  }
  ::unlink(log.c_str());
  return n;
}

// Why `status` does not describe what is under `pin_root` truthfully, ""
// when it does: every entry is an instance, an interrupted load, a
// leftover or the journal, and nothing of bpfmgr's is called foreign.
std::string status_untruthful(const std::string& pin_root) {
  auto r = run_bpfmgr({"status", "--json", "--pin-root", pin_root});
  json st;
  try {
    st = json::parse(r.out);
  } catch (const std::exception&) {
    return "status printed no JSON (exit " + std::to_string(r.exit_code) + "): " + r.err;
  }
  std::set<std::string> told;
  for (auto& i : st["instances"]) told.insert(i["instance"].get<std::string>());
  for (auto& i : st["interrupted"]) told.insert("_staging-" + i["instance"].get<std::string>());
  for (auto& l : st.value("leftovers", json::array())) told.insert(l["name"].get<std::string>());
  if (st["journal"] == true) told.insert("_journal");
  std::string out;
  for (auto& f : st["foreign"]) out += "called foreign: " + f.dump() + "; ";
  for (auto& i : st["interrupted"])
    if (i.value("left_alone", false)) out += "staging left alone: " + i.dump() + "; ";
  std::error_code ec;
  for (auto& e : fs::directory_iterator(pin_root, ec)) {
    auto n = e.path().filename().string();
    if (!told.count(n)) out += "status does not mention " + n + "; ";
  }
  return out;
}

// Kill points of every command that changes a pin root: a load into an
// empty pin root (fresh), an update, an update that drops an instance
// (drop) and an unpin; SIGKILL at each state-changing syscall (mkdir,
// mkdirat, rename, renameat2, unlink, unlinkat, rmdir, and bpf(), which
// covers every bpf command: map and program creation, pins, links, link
// updates, detaches). After each kill, `status` must describe what is left
// truthfully, and the next load (or unpin) must succeed and leave a
// consistent pin root. In CI: two kill points per syscall and scenario,
// chosen at random among the calls the command makes (seed printed; set
// BPFMGR_FAULT_SEED to repeat one). BPFMGR_FAULT_ALL=1 (or
// scripts/fault-sweep.sh) tries every call, each recovered both ways.
TEST(CrashConsistency, KillAtEveryStateChangingSyscallThenLoadOrUnpinRepairs) {
  PinRoot root;
  ScopedCgroup cg;
  auto manifest = [&](int tgid, bool extra) {
    return write_temp_file(header(root.path()) + counter_instance("a", tgid) +
                           "\n[[instance]]\nname = \"cg\"\nplugin = \"testcgroup\"\n"
                           "[instance.options]\ntgid = " + std::to_string(tgid) +
                           "\ncgroup = \"" + cg.path() + "\"\n" +
                           counter_instance("user", tgid) +
                           "[instance.maps]\nstats = \"a\"\n" +
                           (extra ? counter_instance("x", tgid) : ""));
  };
  auto v1 = manifest(1, false), v2 = manifest(2, false);
  // A load drops only instances of its own manifest: the drop scenario
  // edits one file (with x, then without it).
  auto vd = manifest(1, true);
  auto with_x = slurp_file(vd), without_x = slurp_file(v2);
  const bool all = std::getenv("BPFMGR_FAULT_ALL") != nullptr;
  unsigned seed = std::getenv("BPFMGR_FAULT_SEED")
                      ? unsigned(std::strtoul(std::getenv("BPFMGR_FAULT_SEED"), nullptr, 10))
                      : unsigned(std::chrono::steady_clock::now().time_since_epoch().count());
  std::srand(seed);
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  struct Scenario {
    const char* name;
    std::string before;  // manifest loaded first ("" = empty pin root)
    std::vector<std::string> killed;
    std::string repair;  // the manifest the next load loads
  };
  const std::vector<Scenario> scenarios{
      {"fresh", "", {"load", v2}, v2},
      {"update", v1, {"load", v2}, v2},
      {"drop", vd, {"load", vd}, vd},
      {"unpin", v1, {"unpin", "--pin-root", root.path()}, v2}};
  std::vector<std::string> syscalls{"mkdir", "mkdirat", "rename", "renameat2",
                                    "unlink", "unlinkat", "rmdir", "bpf"};
  // BPFMGR_FAULT_SYSCALLS=unlinkat,rmdir narrows a sweep to those.
  if (const char* only = std::getenv("BPFMGR_FAULT_SYSCALLS")) {
    std::vector<std::string> picked;
    std::stringstream ss(only);
    for (std::string sc; std::getline(ss, sc, ',');)
      if (std::count(syscalls.begin(), syscalls.end(), sc)) picked.push_back(sc);
    syscalls = picked;
  }
  auto prepare = [&](const Scenario& s) {
    ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path(), "--quiet"}).exit_code, 0);
    if (s.before == vd) std::ofstream(vd, std::ios::trunc) << with_x;
    if (!s.before.empty()) {
      ASSERT_EQ(run_bpfmgr({"load", s.before}).exit_code, 0);
    }
    if (s.before == vd) std::ofstream(vd, std::ios::trunc) << without_x;
  };
  struct Count {
    int calls = 0, tried = 0, inconsistent = 0, blocked = 0, untruthful = 0;
  };
  std::map<std::pair<std::string, std::string>, Count> counts;
  // CI's bound: past it no new kill point is started (what was tried is
  // reported); the full sweep has a generous one, for a hung command.
  auto deadline = std::chrono::steady_clock::now() +
                  (all ? std::chrono::hours(6) : std::chrono::seconds(150));
  bool out_of_time = false;
  // Every (syscall, scenario, kill point, repair) to try; in CI the first
  // pick of every pair runs before any second one, so a time bound cuts
  // evenly.
  struct Trial {
    std::string sc;
    const Scenario* s;
    int n;
    bool with_unpin;
  };
  std::vector<Trial> first, second;
  for (auto& s : scenarios) {
    prepare(s);
    std::vector<std::string> cmd{bpfmgr_binary(), "--log-level", "off"};
    cmd.insert(cmd.end(), s.killed.begin(), s.killed.end());
    auto calls = syscall_counts(syscalls, cmd);
    for (auto& sc : syscalls) {
      int total = calls[sc];
      counts[{sc, s.name}].calls = total;
      if (total == 0) continue;
      if (all) {
        for (int n = 1; n <= total; ++n)
          first.push_back({sc, &s, n, false}), first.push_back({sc, &s, n, true});
      } else {
        first.push_back({sc, &s, 1 + std::rand() % total, false});
        second.push_back({sc, &s, 1 + std::rand() % total, true});
      }
    }
  }
  first.insert(first.end(), second.begin(), second.end());
  {
    for (auto& t : first) {
      auto& sc = t.sc;
      auto& s = *t.s;
      auto& c = counts[{sc, s.name}];
      std::vector<std::string> cmd{bpfmgr_binary(), "--log-level", "off"};
      cmd.insert(cmd.end(), s.killed.begin(), s.killed.end());
      std::vector<std::pair<int, bool>> points{{t.n, t.with_unpin}};
      for (auto [n, with_unpin] : points) {
        if (std::chrono::steady_clock::now() > deadline) {
          out_of_time = true;
          break;
        }
        prepare(s);
        std::vector<std::string> argv{"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                                      "inject=" + sc + ":signal=SIGKILL:when=" +
                                          std::to_string(n)};
        argv.insert(argv.end(), cmd.begin(), cmd.end());
        auto killed = run(argv);
        if (killed.exit_code == 0) continue;  // the call count differed this time
        ++c.tried;
        auto where = sc + " #" + std::to_string(n) + " " + s.name +
                     (with_unpin ? " then unpin" : " then load") + " (seed " +
                     std::to_string(seed) + ")";
        if (auto why = status_untruthful(root.path()); !why.empty()) {
          ++c.untruthful;
          ADD_FAILURE() << where << ": after the kill, " << why;
        }
        if (with_unpin) {
          auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
          if (u.exit_code != 0) {
            ++c.blocked;
            ADD_FAILURE() << where << ": " << u.out << u.err;
          } else if (!pins_under(root.path()).empty()) {
            ++c.inconsistent;
            ADD_FAILURE() << where << ": left " << pins_under(root.path()).front();
          }
          continue;
        }
        auto l = run_bpfmgr({"load", s.repair});
        if (l.exit_code != 0) {
          ++c.blocked;
          ADD_FAILURE() << where << ": load after the crash failed: " << l.err;
          continue;
        }
        auto why = Kernel::disagreement(root.path());
        auto st = status_of(root.path());
        for (auto& i : st["instances"])
          if (i["instance"] == "x") why += "dropped instance x is still there; ";
        if (st["instances"].size() != 3u) why += "not 3 instances; ";
        auto tree = json::parse(run({"bpftool", "-j", "cgroup", "show", cg.path()}).out);
        if (tree.size() != 1u) why += "cgroup runs " + tree.dump() + "; ";
        if (!why.empty()) {
          ++c.inconsistent;
          ADD_FAILURE() << where << ": " << why;
        }
      }
    }
  }
  ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
  int tried = 0, bad = 0;
  std::printf("fault injection (%s, seed %u): syscall scenario: calls tried inconsistent "
              "blocked untruthful-status\n", all ? "every kill point" : "sample", seed);
  for (auto& [k, c] : counts) {
    std::printf("  %-9s %-6s: %4d %4d %d %d %d\n", k.first.c_str(), k.second.c_str(), c.calls,
                c.tried, c.inconsistent, c.blocked, c.untruthful);
    tried += c.tried;
    bad += c.inconsistent + c.blocked + c.untruthful;
  }
  std::printf("fault injection total: %d kill points tried, %d failed%s\n", tried, bad,
              out_of_time ? " (stopped at the time bound)" : "");
  EXPECT_FALSE(all && out_of_time) << "the full sweep did not finish";
  EXPECT_GT(tried, std::getenv("BPFMGR_FAULT_SYSCALLS") ? 0 : 20);
  EXPECT_FALSE(fs::exists(root.path()));
  auto on_cgroup = run({"bpftool", "-j", "cgroup", "show", cg.path()}).out;
  EXPECT_TRUE(on_cgroup.find_first_not_of(" \n") == std::string::npos ||
              json::parse(on_cgroup).empty())
      << on_cgroup;
}

TEST(CrashConsistency, StagedLinksOfAKilledLoadAreShownThenRemoved) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a") +
                                  counter_instance("b"));
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto killed = run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                     "inject=rename:signal=SIGKILL:when=1", bpfmgr_binary(), "load", manifest});
  ASSERT_NE(killed.exit_code, 0);
  auto st = status_of(root.path());
  // Killed as the commit's first rename began: both staged instances'
  // tracepoint links run; status says so, with their ids.
  ASSERT_EQ(st["interrupted"].size(), 2u) << st.dump(2);
  for (auto& left : st["interrupted"]) {
    EXPECT_EQ(left["committing"], true);
    ASSERT_FALSE(left["links"].empty()) << left.dump(2);
    EXPECT_TRUE(left["links"][0].contains("id")) << left.dump(2);
  }
  EXPECT_EQ(st["journal"], true);
  auto text = run_bpfmgr({"status", "--pin-root", root.path()}).out;
  EXPECT_TRUE(contains(text, "interrupted load of b")) << text;
  EXPECT_TRUE(contains(text, "staged link count_getppid id")) << text;
  auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(u.exit_code, 0) << u.err;
  EXPECT_TRUE(contains(u.out, "a: finished a commit")) << u.out;
  EXPECT_TRUE(contains(u.out, "b: finished a commit")) << u.out;
  EXPECT_TRUE(contains(u.out, "unpinned: a, b")) << u.out;
  EXPECT_FALSE(fs::exists(root.path()));
}

TEST(KernelDrift, LinksDetachedByHandAreSeenAndRepaired) {
  if (!fs::exists(plugin_dir() + "/bpfmgr-sockops.so") ||
      !fs::exists(plugin_dir() + "/bpfmgr-sockmsg.so"))
    GTEST_SKIP() << "needs the sockops and sockmsg plugins";
  PinRoot root;
  ScopedCgroup cg;
  auto manifest = write_temp_file(
      "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" + plugin_dir() +
      "\"]\n[[instance]]\nname = \"ops\"\nplugin = \"sockops\"\n[instance.options]\n"
      "cgroup = \"" + cg.path() + "\"\n[[instance]]\nname = \"msg\"\nplugin = \"sockmsg\"\n"
      "[instance.maps]\nsock_hash = \"ops\"\n");
  auto r = run_bpfmgr({"load", manifest});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto st = status_of(root.path());
  std::vector<std::uint32_t> detached;
  for (auto& i : st["instances"])
    for (auto& l : i["links"]) {
      auto type = l.value("type", "");
      if (type == "cgroup" || type == "sockmap") detached.push_back(l["id"]);
    }
  ASSERT_EQ(detached.size(), 2u) << st.dump(2);
  for (auto id : detached) {
    auto d = run({"bpftool", "link", "detach", "id", std::to_string(id)});
    ASSERT_EQ(d.exit_code, 0) << d.err;
  }
  st = status_of(root.path());
  for (auto& i : st["instances"]) {
    EXPECT_TRUE(i.contains("drift")) << i.dump(2);
    for (auto& h : i["hooks"])
      if (contains(h["target"].get<std::string>(), "cgroup:") ||
          contains(h["target"].get<std::string>(), "map:")) {
        EXPECT_EQ(h["live"], false) << h.dump();
        EXPECT_TRUE(contains(h["reason"].get<std::string>(), "detached")) << h.dump();
      }
  }
  r = run_bpfmgr({"load", manifest});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "repaired: ops")) << r.err;
  EXPECT_TRUE(contains(r.err, "repaired: msg")) << r.err;
  EXPECT_EQ(Kernel::disagreement(root.path()), "");
  auto tree = json::parse(run({"bpftool", "-j", "cgroup", "show", cg.path()}).out);
  EXPECT_EQ(tree.size(), 1u) << tree.dump();
  r = run_bpfmgr({"load", manifest});
  EXPECT_TRUE(contains(r.out, "nothing to do")) << r.out;
}

// Loads instances a and b of the counter plugin, moves b's pin `pin` (a
// path under the instance directory) over a's, and checks that status
// reports each instance's drift and that the next load repairs both.
void expect_swapped_pin_is_drift_and_repaired(const PinRoot& root, const std::string& pin,
                                              const std::string& drift_of_a,
                                              const std::string& drift_of_b) {
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a", 1) +
                                  counter_instance("b", 2));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  ASSERT_EQ(::rename((root.path() + "/b/" + pin).c_str(), (root.path() + "/a/" + pin).c_str()),
            0);
  auto st = status_of(root.path());
  ASSERT_EQ(st["instances"].size(), 2u);
  EXPECT_TRUE(contains(st["instances"][0].value("drift", ""), drift_of_a))
      << st["instances"][0].dump(2);
  EXPECT_TRUE(contains(st["instances"][1].value("drift", ""), drift_of_b))
      << st["instances"][1].dump(2);
  auto r = run_bpfmgr({"load", manifest});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "repaired: a")) << r.err;
  EXPECT_TRUE(contains(r.err, "repaired: b")) << r.err;
  EXPECT_EQ(Kernel::disagreement(root.path()), "");
}

TEST(KernelDrift, ProgramPinSwappedByHandIsSeenAndRepaired) {
  PinRoot root;
  // b's program sits where a's was: same name, another program.
  expect_swapped_pin_is_drift_and_repaired(root, "progs/count_getppid", "not the one loaded",
                                           "missing");
  if (HasFatalFailure()) return;
  auto st = status_of(root.path());
  EXPECT_EQ(st["instances"][0]["programs"][0]["tag"].get<std::string>().size(), 16u);
}

TEST(KernelDrift, LinkPinSwappedByHandIsSeenAndRepaired) {
  PinRoot root;
  // b's link sits where a's was: a live link, running b's program.
  expect_swapped_pin_is_drift_and_repaired(root, "links/count_getppid",
                                           "the link runs program id", "link pin is missing");
}

// ------------------------------------------------------------------ signals

TEST(Signals, InterruptBeforeTheCommitRollsBack) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a") +
                                  counter_instance("b"));
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto before = KernelObjects::settled({"count_getppid", "stats"});
  // SIGINT as the first staging directory is made.
  auto r = run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                "inject=mkdir:signal=SIGINT:when=2", bpfmgr_binary(), "load", manifest});
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(contains(r.err, "interrupted by SIGINT before the commit")) << r.err;
  EXPECT_TRUE(contains(r.err, "rolled back")) << r.err;
  EXPECT_TRUE(pins_under(root.path()).empty());
  EXPECT_EQ(before.diff_settled({"count_getppid", "stats"}), "");
  // SIGTERM too, with its own exit code.
  r = run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
           "inject=mkdir:signal=SIGTERM:when=3", bpfmgr_binary(), "load", manifest});
  EXPECT_EQ(r.exit_code, 143) << r.err;
  EXPECT_TRUE(pins_under(root.path()).empty());
}

TEST(Signals, InterruptDuringTheCommitFinishesIt) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a") +
                                  counter_instance("b"));
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto r = run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                "inject=rename:signal=SIGINT:when=1", bpfmgr_binary(), "load", manifest});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "committing, please wait")) << r.err;
  EXPECT_TRUE(contains(r.err, "interrupted during the commit: the load was finished")) << r.err;
  EXPECT_TRUE(contains(r.out, "loaded: a, b")) << r.out;
  EXPECT_EQ(Kernel::disagreement(root.path()), "");
}

// ------------------------------------------------------- failures surface

TEST(Failures, CommitErrorReachesTheExitCodeAndTheNextLoadFinishesIt) {
  PinRoot root;
  auto v1 = write_temp_file(header(root.path()) + counter_instance("a", 1));
  auto v2 = write_temp_file(header(root.path()) + counter_instance("a", 2));
  ASSERT_EQ(run_bpfmgr({"load", v1}).exit_code, 0);
  // The commit's rename of the program fails: EACCES injected.
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto r = run({"strace", "-f", "-qq", "-o", "/dev/null", "-e",
                "inject=rename:error=EACCES:when=1", bpfmgr_binary(), "load", v2});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_FALSE(contains(r.out, "updated:")) << r.out;
  EXPECT_TRUE(contains(r.err, "commit of instance 'a' failed")) << r.err;
  EXPECT_TRUE(contains(r.err, "Permission denied")) << r.err;
  EXPECT_TRUE(contains(r.err, "finishes it")) << r.err;
  auto st = status_of(root.path());
  EXPECT_EQ(st["journal"], true);
  r = run_bpfmgr({"load", v2});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "a: finished a commit")) << r.err;
  EXPECT_EQ(Kernel::disagreement(root.path()), "");
}

TEST(Failures, UnpinFailsAndSaysWhatIsLeft) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  // A directory where a link pin was: not a pin, not ours to remove.
  ASSERT_EQ(::unlink((root.path() + "/a/links/count_getppid").c_str()), 0);
  ASSERT_EQ(::mkdir((root.path() + "/a/links/count_getppid").c_str(), 0700), 0);
  auto r = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.err, "a/links/count_getppid: unexpected directory; left alone")) << r.err;
  EXPECT_FALSE(contains(r.out, "unpinned: a")) << r.out;
  // The record stays with what is left, so bpfmgr still knows it is its own.
  EXPECT_TRUE(fs::exists(root.path() + "/a/state"));
  ::rmdir((root.path() + "/a/links/count_getppid").c_str());
  r = run_bpfmgr({"unpin", "--pin-root", root.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// ------------------------------------------------- a plugin that crashes

TEST(PluginCrash, HookThatCrashesIsNamedAndTheNextCommandRepairs) {
  PinRoot root;
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  auto good = write_temp_file(header(root.path()) + counter_instance("a"));
  // before_load runs while the manifest is resolved, before the load
  // stages anything (and, in serve, inside a load once more); attach runs
  // before anything of the instance is pinned; after_attach once its
  // staging directory is written, which is then all that is left.
  struct Crash {
    const char* plugin;
    const char* hook;
    const char* said;  // what the message says of the load
    const char* next;  // and of what the next command does
    bool staged;
  };
  for (auto& c : {Crash{"testcrash", "after_attach",
                        "the load had not committed: whatever it had staged for 'a'",
                        "the next `bpfmgr load` of the manifest or `bpfmgr unpin` reverts it",
                        true},
                  Crash{"testcrashattach", "attach",
                        "the load had not committed, and nothing of 'a' was pinned yet: its new "
                        "links died with the process",
                        "until the next `bpfmgr load` of the manifest (or `bpfmgr unpin`) "
                        "repairs it",
                        false},
                  Crash{"testcrashearly", "before_load",
                        "if a load was running, it had not committed",
                        "otherwise nothing was changed", false}}) {
    for (bool repair_with_unpin : {false, true}) {
      auto crashing = write_temp_file(
          header(root.path()) + "\n[[instance]]\nname = \"a\"\nplugin = \"" + c.plugin +
          "\"\n[instance.options]\ntgid = 1\n");
      auto r = run_bpfmgr({"load", crashing});
      EXPECT_EQ(r.exit_code, 128 + SIGSEGV) << r.err;
      EXPECT_TRUE(contains(r.err, std::string("bpfmgr: plugin ") + c.plugin +
                                      " crashed in hook " + c.hook +
                                      " of instance a (SIGSEGV); " + c.said))
          << r.err;
      EXPECT_TRUE(contains(r.err, c.next)) << r.err;
      // What is left is what status shows.
      auto st = status_of(root.path());
      EXPECT_EQ(st["interrupted"].size(), c.staged ? 1u : 0u) << st.dump(2);
      if (!c.staged) {
        EXPECT_TRUE(pins_under(root.path()).empty());
      }
      EXPECT_TRUE(st["foreign"].empty()) << st.dump(2);
      EXPECT_EQ(status_untruthful(root.path()), "");
      if (repair_with_unpin) {
        auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
        EXPECT_EQ(u.exit_code, 0) << u.err;
        EXPECT_TRUE(pins_under(root.path()).empty());
      } else {
        auto l = run_bpfmgr({"load", good});
        EXPECT_EQ(l.exit_code, 0) << l.err;
        EXPECT_EQ(Kernel::disagreement(root.path()), "");
        ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
      }
    }
  }
}

// ---------------------------------------------- state records are input

TEST(RecordsAreInput, TamperedRecordIsReportedAndNeverFollowedOutside) {
  PinRoot outer;
  auto root = outer.path() + "/inner";
  // Another tool's pin beside the pin root.
  ASSERT_EQ(::mkdir(outer.path().c_str(), 0700) == 0 || errno == EEXIST, true);
  ASSERT_EQ(::mkdir((outer.path() + "/other-tool").c_str(), 0700), 0);
  auto victim = outer.path() + "/other-tool/victim";
  int map = bpf_map_create(BPF_MAP_TYPE_ARRAY, "victim", 4, 4, 1, nullptr);
  ASSERT_GE(map, 0);
  ASSERT_EQ(bpf_obj_pin(map, victim.c_str()), 0);
  ::close(map);

  auto v1 = write_temp_file(header(root) + counter_instance("a", 1));
  auto v2 = write_temp_file(header(root) + counter_instance("a", 2));
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  ASSERT_EQ(run_bpfmgr({"load", v1}).exit_code, 0);
  auto rec = read_state(root + "/a/state");
  ASSERT_TRUE(rec);
  rec->maps.push_back("../../../other-tool/victim");
  write_state(InstancePaths{root + "/a"}, *rec);

  auto st = status_of(root);
  ASSERT_EQ(st["instances"].size(), 1u) << st.dump(2);
  auto err = st["instances"][0].value("error", "");
  EXPECT_TRUE(contains(err, "WARNING: its state record was tampered with")) << st.dump(2);
  EXPECT_TRUE(contains(err, "../../../other-tool/victim")) << err;
  auto text = run_bpfmgr({"status", "--pin-root", root});
  EXPECT_TRUE(contains(text.out, "tampered")) << text.out;

  auto r = run_bpfmgr({"load", v2});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(victim)) << "an update followed a tampered record outside";
  EXPECT_EQ(Kernel::disagreement(root), "");
  r = run_bpfmgr({"unpin", "--pin-root", root});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(victim)) << "unpin followed a tampered record outside";

  // Unpin of a tampered record removes its own directory only.
  ASSERT_EQ(run_bpfmgr({"load", v1}).exit_code, 0);
  rec = read_state(root + "/a/state");
  ASSERT_TRUE(rec);
  rec->shared_maps.push_back({"stats", "a", victim});
  write_state(InstancePaths{root + "/a"}, *rec);
  r = run_bpfmgr({"unpin", "--pin-root", root});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(victim));
  EXPECT_TRUE(pins_under(root).empty());
  ::unlink(victim.c_str());
  ::rmdir((outer.path() + "/other-tool").c_str());
}

// A load rewrites an unchanged instance's record in place (its input
// fingerprint) while status and metrics read without a lock: a read that
// lands in the middle of the copy is read again, never reported damaged.
TEST(RecordsAreInput, ARecordRewrittenInPlaceIsNeverReadHalfWritten) {
  PinRoot root;
  auto manifest = write_temp_file(header(root.path()) + counter_instance("a"));
  ASSERT_EQ(run_bpfmgr({"load", manifest}).exit_code, 0);
  InstancePaths dir{root.path() + "/a"};
  auto path = dir.state();
  auto record = read_state(path);
  ASSERT_TRUE(record);
  // Two versions of different lengths, so that halves of each disagree.
  auto shorter = *record, longer = *record;
  shorter.input_fingerprint = "";
  longer.input_fingerprint = std::string(16, 'f');
  longer.options["padding"] = std::string(20000, 'x');
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (bool flip = false; !stop; flip = !flip) write_state(dir, flip ? longer : shorter);
  });
  int damaged = 0;
  std::string why;
  for (int i = 0; i < 3000; ++i) {
    auto l = lookup_state(path);
    if (l.kind != StateLookup::Valid) {
      ++damaged;
      why = l.why;
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(damaged, 0) << why;
  write_state(dir, *record);
  EXPECT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
}

TEST(RecordsAreInput, ForeignContentInAStagingNameBlocksOnlyThatName) {
  PinRoot root;
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  ASSERT_EQ(::mkdir(root.path().c_str(), 0700) == 0 || errno == EEXIST, true);
  ASSERT_EQ(::mkdir((root.path() + "/_staging-x").c_str(), 0700), 0);
  int map = bpf_map_create(BPF_MAP_TYPE_ARRAY, "foreign", 4, 4, 1, nullptr);
  ASSERT_GE(map, 0);
  auto foreign = root.path() + "/_staging-x/theirs";
  ASSERT_EQ(bpf_obj_pin(map, foreign.c_str()), 0);
  ::close(map);
  auto m = write_temp_file(header(root.path()) + counter_instance("a"));
  auto r = run_bpfmgr({"load", m});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto st = status_of(root.path());
  ASSERT_EQ(st["interrupted"].size(), 1u) << st.dump(2);
  EXPECT_EQ(st["interrupted"][0].value("left_alone", false), true) << st.dump(2);
  EXPECT_TRUE(contains(st["interrupted"][0]["next"].get<std::string>(), "left alone"));
  r = run_bpfmgr({"unpin", "--pin-root", root.path(), "a"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(foreign));
  ::unlink(foreign.c_str());
  ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
}

// ------------------------------------------------ exit codes and messages

TEST(ExitCodes, PinRootsThatAreNotBpffsOrNotAbsoluteExit2) {
  for (auto root : {"rel/x", "/tmp"}) {
    auto r = run_bpfmgr({"unpin", "--pin-root", root});
    EXPECT_EQ(r.exit_code, 2) << root << ": " << r.err;
    r = run_bpfmgr({"status", "--pin-root", root});
    EXPECT_EQ(r.exit_code, 2) << root << ": " << r.out << r.err;
    EXPECT_FALSE(contains(r.out, "not bpfmgr's")) << r.out;
    r = run_bpfmgr({"events", "x", "--pin-root", root, "--duration", "1"});
    EXPECT_EQ(r.exit_code, 2) << root << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "pin root")) << r.err;
    EXPECT_FALSE(contains(r.err, "no instance")) << r.err;
  }
  EXPECT_FALSE(fs::exists("rel"));
}

TEST(ExitCodes, WithoutPrivilegesEventsAndBenchSayPermissionDenied) {
  PinRoot root;
  ::setenv("BPFMGR_PLUGIN_PATH", test_plugin_dir().c_str(), 1);
  ASSERT_EQ(run_bpfmgr({"load", write_temp_file(header(root.path()) + counter_instance("a"))})
                .exit_code,
            0);
  auto nobody = [](std::vector<std::string> args) {
    std::vector<std::string> argv{"setpriv", "--reuid=65534", "--regid=65534",
                                  "--clear-groups", bpfmgr_binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  auto r = nobody({"events", "a", "--pin-root", root.path(), "--duration", "1"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "permission denied")) << r.err;
  EXPECT_FALSE(contains(r.err, "load it first")) << r.err;
  r = nobody({"bench", "probes"});
  EXPECT_NE(r.exit_code, 134) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "permission denied")) << r.err;
  ASSERT_EQ(run_bpfmgr({"unpin", "--pin-root", root.path()}).exit_code, 0);
}

}  // namespace
}  // namespace bpfmgr::test
