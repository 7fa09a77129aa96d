#include "test_support.hpp"

#include <bpf/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace bpfmgr::test {
namespace fs = std::filesystem;

std::string plugin_dir() { return BPFMGR_TEST_PLUGIN_DIR; }
std::string test_plugin_dir() { return BPFMGR_TEST_TEST_PLUGIN_DIR; }
std::string source_dir() { return BPFMGR_TEST_SOURCE_DIR; }
std::string build_dir() { return BPFMGR_TEST_BUILD_DIR; }

std::string test_manifest_header(const PinRoot& root) {
  return "pin_root = \"" + root.path() + "\"\nplugin_path = [\"" +
         test_plugin_dir() + "\"]\n";
}

CommandResult run_bpfmgr(const std::vector<std::string>& args) {
  ::setenv("BPFMGR_PLUGIN_PATH", plugin_dir().c_str(), 1);
  return bench::run_bpfmgr(args);
}

// ------------------------------------------------------------ KernelObjects

namespace {

std::string prog_name(std::uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "";
  ::close(fd);
  return name;
}

std::string map_name(std::uint32_t id) {
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "";
  ::close(fd);
  return name;
}

std::string link_prog_name(std::uint32_t id) {
  int fd = bpf_link_get_fd_by_id(id);
  if (fd < 0) return {};
  bpf_link_info info{};
  std::uint32_t len = sizeof(info);
  std::string name =
      bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? prog_name(info.prog_id) : "";
  ::close(fd);
  return name;
}

template <class Next, class Name>
std::map<std::uint32_t, std::string> all_ids(Next next, Name name) {
  std::map<std::uint32_t, std::string> ids;
  std::uint32_t id = 0;
  while (next(id, &id) == 0) ids[id] = name(id);
  return ids;
}

void diff_set(std::ostringstream& os, const char* what,
              const std::map<std::uint32_t, std::string>& a,
              const std::map<std::uint32_t, std::string>& b,
              const std::vector<std::string>& names) {
  auto counts = [&](const std::string& n) {
    if (names.empty()) return true;
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  for (auto& [id, n] : b)
    if (!a.count(id) && counts(n)) os << what << " " << id << " (" << n << ") appeared; ";
  for (auto& [id, n] : a)
    if (!b.count(id) && counts(n)) os << what << " " << id << " (" << n << ") disappeared; ";
}
}  // namespace

KernelObjects KernelObjects::snapshot() {
  KernelObjects k;
  k.progs = all_ids(bpf_prog_get_next_id, prog_name);
  k.maps = all_ids(bpf_map_get_next_id, map_name);
  k.links = all_ids(bpf_link_get_next_id, link_prog_name);
  return k;
}

KernelObjects KernelObjects::settled(const std::vector<std::string>& names) {
  // Unchanged for 250 ms: the kernel frees a program or map an earlier test
  // (or process) released after an RCU grace period, which under load can
  // outlast one 50 ms look; such a late free then read as "disappeared".
  constexpr int kQuietLooks = 5;
  auto now = snapshot();
  int quiet = 0;
  for (int i = 0; i < 100 && quiet < kQuietLooks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto next = snapshot();
    quiet = now.diff(next, names).empty() ? quiet + 1 : 0;
    now = std::move(next);
  }
  return now;
}

std::string KernelObjects::diff_settled(const std::vector<std::string>& names) const {
  std::string d;
  for (int i = 0; i < 60; ++i) {
    d = diff(snapshot(), names);
    if (d.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return d;
}

std::string KernelObjects::diff(const KernelObjects& after,
                                const std::vector<std::string>& names) const {
  std::ostringstream os;
  diff_set(os, "prog", progs, after.progs, names);
  diff_set(os, "map", maps, after.maps, names);
  diff_set(os, "link", links, after.links, names);
  return os.str();
}

std::vector<std::string> pins_under(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_directory(ec)) out.push_back(it->path().string());
  }
  return out;
}

std::string write_temp_file(const std::string& content,
                            const std::string& suffix) {
  static std::mutex mu;
  static std::vector<std::string> created;
  std::string dir = "/tmp/bpfmgr-tests";
  fs::create_directories(dir);
  std::string path = dir + "/" + unique_name("file") + suffix;
  std::ofstream(path) << content;
  std::lock_guard lock(mu);
  if (created.empty())
    std::atexit([] {
      std::lock_guard l(mu);
      for (auto& p : created) ::unlink(p.c_str());
    });
  created.push_back(path);
  return path;
}

}  // namespace bpfmgr::test
