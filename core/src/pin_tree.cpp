#include "pin_tree.hpp"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <system_error>

namespace bpfmgr {
namespace fs = std::filesystem;

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) spdlog::warn("cannot remove {}: {}", path, ec.message());
}

void remove_instance_dir(const std::string& dir) {
  remove_tree(dir + "/links");
  remove_tree(dir);
}

}  // namespace bpfmgr
