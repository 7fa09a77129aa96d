#include "pin_tree.hpp"

#include <bpf/bpf.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <system_error>

#include "handles.hpp"

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

bool detach_map_attachment(const std::string& instance_dir,
                           const MapAttachmentRecord& attachment) {
  Fd map(bpf_obj_get(attachment.map_pin.c_str()));
  Fd prog(bpf_obj_get((instance_dir + "/progs/" + attachment.prog).c_str()));
  return map && prog &&
         bpf_prog_detach2(prog.get(), map.get(),
                          bpf_attach_type(attachment.attach_type)) == 0;
}

}  // namespace bpfmgr
