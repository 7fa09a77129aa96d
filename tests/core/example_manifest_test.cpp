// The shipped example manifest loads every first-party plugin together and
// unpins cleanly. The test points its cgroups at its own cgroup.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <thread>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using nlohmann::json;

TEST(ExampleManifest, ValidatesLoadsEveryPluginAndUnpins) {
  std::ifstream in(source_dir() + "/examples/manifests/bpfmgr.toml");
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  ASSERT_FALSE(text.empty());

  // The example's cgroup (scripts/run.sh makes it) must exist to validate:
  // the test's own cgroup stands in for it.
  ScopedCgroup cg;
  PinRoot root;
  text = std::regex_replace(text, std::regex(R"(cgroup = "bpfmgr-demo")"),
                            "cgroup = \"" + cg.path() + "\"");
  text = std::regex_replace(text, std::regex(R"(pin_root = "[^"]*")"),
                            "pin_root = \"" + root.path() + "\"");
  auto path = write_temp_file(text);
  auto v = run_bpfmgr({"validate", path});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  auto r = run_bpfmgr({"load", path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  auto status = json::parse(run_bpfmgr({"status", "--json", "--pin-root", root.path()}).out);
  std::set<std::string> plugins;
  std::set<std::uint32_t> prog_ids, map_ids;
  for (auto& inst : status["instances"]) {
    EXPECT_EQ(inst["complete"], true) << inst.dump(2);
    plugins.insert(inst["plugin"].get<std::string>());
    for (auto& p : inst["programs"]) {
      ASSERT_TRUE(p.contains("id")) << p.dump();
      prog_ids.insert(p["id"].get<std::uint32_t>());
    }
    for (auto& m : inst["maps"]) {
      ASSERT_TRUE(m.contains("id")) << m.dump();
      map_ids.insert(m["id"].get<std::uint32_t>());
    }
    for (auto& h : inst["hooks"])
      if (!h["live"].get<bool>()) ADD_FAILURE() << "hook not live: " << h.dump();
  }
  EXPECT_EQ(plugins, (std::set<std::string>{"sockops", "sockmsg", "tcpint", "probes"}));

  // One reader per ring buffer: a second `bpfmgr events` is refused while
  // the first runs, instead of silently splitting the records.
  std::uint32_t ring_id = 0;
  for (auto& inst : status["instances"])
    if (inst["instance"] == "probes")
      for (auto& m : inst["maps"])
        if (m.value("type", "") == "ringbuf") ring_id = m["id"].get<std::uint32_t>();
  ASSERT_NE(ring_id, 0u) << "no ring buffer in the probes instance's status";
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  pid_t first = ::fork();
  ASSERT_GE(first, 0);
  if (first == 0) {
    ::execl(bpfmgr_binary().c_str(), "bpfmgr", "events", "probes", "--pin-root",
            root.path().c_str(), "--duration", "300", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // The second starts once the first holds the ring buffer's reader lock
  // (a fixed 500 ms raced a slow start in a TCG guest: the second took the
  // ring and waited for a record until ctest's timeout).
  const std::string lock = "/run/bpfmgr/events-map-" + std::to_string(ring_id) + ".lock";
  bool held = false;
  for (int i = 0; i < 600 && !held; ++i) {
    int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      held = ::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid == first;
      ::close(fd);
    }
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!held) {
    ::kill(first, SIGKILL);
    ::waitpid(first, nullptr, 0);
  }
  ASSERT_TRUE(held) << "the first `bpfmgr events` did not take " << lock << " within 60 s";
  // A second that did get the ring would end by its --duration, not hang.
  auto second = run_bpfmgr(
      {"events", "probes", "--pin-root", root.path(), "--count", "1", "--duration", "30"});
  ::kill(first, SIGINT);
  int first_status = 0;
  ::waitpid(first, &first_status, 0);
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("another `bpfmgr events` is reading instance 'probes'"),
            std::string::npos)
      << second.err;
  EXPECT_TRUE(WIFEXITED(first_status) && WEXITSTATUS(first_status) == 0)
      << "first reader: " << first_status;

  // Again: nothing to do.
  r = run_bpfmgr({"load", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;

  auto u = run_bpfmgr({"unpin", "--pin-root", root.path()});
  ASSERT_EQ(u.exit_code, 0) << u.err;
  EXPECT_TRUE(pins_under(root.path()).empty());
  // Every program and map the example loaded is gone from the kernel (the
  // kernel frees them after an RCU grace period: give it time).
  std::vector<std::string> still;
  for (int attempt = 0; attempt < 60; ++attempt) {
    still.clear();
    auto after = KernelObjects::snapshot();
    for (auto id : prog_ids)
      if (after.progs.count(id)) still.push_back("prog " + after.progs[id]);
    for (auto id : map_ids)
      if (after.maps.count(id)) still.push_back("map " + after.maps[id]);
    if (still.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(still.empty()) << still.size() << " objects left, first: " << still[0];
}

}  // namespace
}  // namespace bpfmgr::test
