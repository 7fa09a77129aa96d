#include "instance_object.hpp"

#include <bpf/btf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "verifier_log.hpp"

namespace bpfmgr {

namespace {

constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";

bool has_effective_cap(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return true;  // unknown: as before
  return (data[cap / 32].effective >> (cap % 32)) & 1u;
}

}  // namespace

BpfObject open_plugin_object(const LoadedPlugin& plugin, std::string* log) {
  auto bytes = plugin.bpf_object;
  LibbpfLogCapture capture;
  bpf_object_open_opts opts{};
  opts.sz = sizeof(opts);
  opts.object_name = plugin.info.name.c_str();
  // A CO-RE type vmlinux lacks (a ___flavour of a struct this kernel does
  // not have) makes libbpf search the module BTFs, walking BTF ids: the
  // kernel allows that with CAP_SYS_ADMIN only, and libbpf 1.1 fails the
  // load without it. Naming vmlinux's BTF as the target searches it alone
  // (the type is then absent, as on a kernel without it), so serve needs
  // CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; with CAP_SYS_ADMIN modules are
  // searched as before.
  if (!has_effective_cap(CAP_SYS_ADMIN) && ::access(kVmlinuxBtf, R_OK) == 0)
    opts.btf_custom_path = kVmlinuxBtf;
  BpfObject obj(bpf_object__open_mem(bytes.data(), bytes.size(), &opts));
  if (!obj && log) {
    int err = errno;
    *log = capture.text();
    errno = err;
  }
  return obj;
}

void InstanceObject::open() {
  std::string log;
  obj_ = open_plugin_object(*plugin_file_, &log);
  if (!obj_)
    fail("libbpf cannot open the BPF object: " + errno_text(errno) + "\n" +
         verifier_log_tail(log, "", 10));
}

void InstanceObject::prepare() {
  try {
    plugin_ = plugin_file_->plugin->create(*this);
  } catch (const std::exception& e) {
    fail(e.what());
  }
  try {
    run_hook(Phase::BeforeLoad, "before_load", &PluginInstance::before_load);
  } catch (...) {
    phase_ = Phase::Open;  // not prepared: no load takes it, no map is compared
    throw;
  }
}

void InstanceObject::set_global(std::string_view var, const void* data,
                             std::size_t size) {
  require(Phase::BeforeLoad, "set_global");
  const btf* b = bpf_object__btf(obj_.get());
  if (!b) fail("the BPF object has no BTF; cannot find global '" +
               std::string(var) + "'");
  for (std::uint32_t id = 1; id < btf__type_cnt(b); ++id) {
    const btf_type* t = btf__type_by_id(b, id);
    if (!btf_is_datasec(t)) continue;
    std::string sec = btf__name_by_offset(b, t->name_off);
    const btf_var_secinfo* vs = btf_var_secinfos(t);
    for (std::uint16_t i = 0; i < btf_vlen(t); ++i, ++vs) {
      const btf_type* vt = btf__type_by_id(b, vs->type);
      if (var != btf__name_by_offset(b, vt->name_off)) continue;
      if (vs->size != size)
        fail("global '" + std::string(var) + "' is " + std::to_string(vs->size) +
             " bytes in BTF but " + std::to_string(size) + " were given");
      bpf_map* m;
      bpf_object__for_each_map(m, obj_.get()) {
        if (!bpf_map__is_internal(m)) continue;
        std::string mn = bpf_map__name(m);
        if (mn.size() < sec.size() ||
            mn.compare(mn.size() - sec.size(), sec.size(), sec) != 0)
          continue;
        std::size_t mapped = 0;
        auto* base = static_cast<char*>(const_cast<void*>(bpf_map__initial_value(m, &mapped)));
        if (!base || vs->offset + size > mapped)
          fail("cannot write global '" + std::string(var) + "' in " + sec);
        std::memcpy(base + vs->offset, data, size);
        return;
      }
      fail("no map backs section " + sec + " of global '" + std::string(var) + "'");
    }
  }
  fail("no global variable named '" + std::string(var) + "' in the BPF object");
}

}  // namespace bpfmgr
