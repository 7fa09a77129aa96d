#include "loader.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "commit.hpp"
#include "handles.hpp"
#include "pin_tree.hpp"
#include "system.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {


std::string now_utc() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string config_hash(const ResolvedInstance& r, const Manifest& m) {
  nlohmann::json j;
  j["plugin"] = r.plugin->info.name;
  j["version"] = r.plugin->info.version;
  j["path"] = r.plugin->path;
  auto bytes = r.plugin->plugin->bpf_object();
  j["object"] = fnv1a_hex(std::string_view(
      reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  j["options"] = options_to_json(r.options);
  auto& shares = j["maps"] = nlohmann::json::array();
  for (auto& s : r.spec->maps)
    shares.push_back({s.map, s.instance, s.remote_map});
  j["pin_root"] = m.pin_root;
  return fnv1a_hex(j.dump());
}

struct MapDef {
  std::uint32_t type, key, value, max_entries;
};

std::optional<MapDef> pinned_map_def(int fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return std::nullopt;
  return MapDef{info.type, info.key_size, info.value_size, info.max_entries};
}

// "" when compatible, else what differs.
std::string map_mismatch(bpf_map* map, const MapDef& pinned) {
  auto name = [](std::uint32_t t) {
    auto s = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t));
    return std::string(s ? s : "?");
  };
  if (bpf_map__type(map) != pinned.type)
    return "type " + name(bpf_map__type(map)) + " vs " + name(pinned.type);
  if (bpf_map__key_size(map) != pinned.key)
    return "key size " + std::to_string(bpf_map__key_size(map)) + " vs " +
           std::to_string(pinned.key);
  if (bpf_map__value_size(map) != pinned.value)
    return "value size " + std::to_string(bpf_map__value_size(map)) + " vs " +
           std::to_string(pinned.value);
  if (bpf_map__max_entries(map) != pinned.max_entries)
    return "max entries " + std::to_string(bpf_map__max_entries(map)) +
           " vs " + std::to_string(pinned.max_entries);
  return {};
}

std::string failing_program(const std::string& captured) {
  // libbpf: "prog 'NAME': BPF program load failed: ..."
  auto p = captured.find("': BPF program load failed");
  if (p == std::string::npos) p = captured.find("': failed to load");
  if (p == std::string::npos) return {};
  auto b = captured.rfind("prog '", p);
  if (b == std::string::npos) return {};
  return captured.substr(b + 6, p - b - 6);
}

// A failure already phrased with its instance and plugin.
class InstanceError : public Error {
 public:
  using Error::Error;
};

using SharedMapLookup =
    std::function<int(const std::string& instance, const std::string& map)>;

// One instance's part of a load transaction; also the context its plugin's
// hooks see (through the C ABI's context table).
class InstanceTxn final : public HostContext {
 public:
  InstanceTxn(const ResolvedInstance& r, const Manifest& m, const PinLayout& layout,
              std::optional<InstanceState> old, const LoadOptions& lo,
              SharedMapLookup lookup, std::string config_hash,
              std::function<void()> check_cancel)
      : config_hash_(std::move(config_hash)),
        r_(r),
        manifest_(m),
        layout_(layout),
        old_(std::move(old)),
        lo_(lo),
        lookup_(std::move(lookup)),
        check_cancel_(std::move(check_cancel)),
        final_(layout.instance(r.spec->name)),
        staging_(layout.staging(r.spec->name)) {}

  ~InstanceTxn() override = default;

  void stage();
  void commit();
  // Appends what it could not undo to `errors`.
  void rollback(std::vector<std::string>& errors) noexcept;

  // Opens the object and runs before_load only: the maps' final
  // definitions, for checks that must not touch the kernel (validate).
  void open_for_spec() {
    open_object();
    create_plugin_instance();
    phase_ = Phase::BeforeLoad;
    hook("before_load", &PluginInstance::before_load);
  }
  bpf_map* spec_map(const std::string& name) const {
    return bpf_object__find_map_by_name(obj_.get(), name.c_str());
  }

  // Map fd of this (staged) instance, for instances sharing its maps.
  int own_map_fd(const std::string& map) const {
    auto* m = bpf_object__find_map_by_name(obj_.get(), map.c_str());
    return m ? bpf_map__fd(m) : -1;
  }
  bool recreated_map(const std::string& map) const {
    return old_ && !reused_maps_.count(map);
  }

  // ---- HostContext
  const std::string& instance_name() const override { return r_.spec->name; }
  const Options& options() const override { return r_.options; }
  const std::string& pin_dir() const override { return final_.dir; }
  void set_global(std::string_view var, const void* data,
                  std::size_t size) override;
  void set_max_entries(std::string_view map, std::uint32_t n) override {
    require(Phase::BeforeLoad, "set_max_entries");
    if (bpf_map__set_max_entries(find_map(map), n) != 0)
      fail("set_max_entries(" + std::string(map) + "): " + errno_text(errno));
  }
  void set_autoload(std::string_view prog, bool load) override {
    require(Phase::BeforeLoad, "set_autoload");
    bpf_program__set_autoload(find_prog(prog), load);
  }
  int map_fd(std::string_view map) const override {
    require_loaded("map_fd");
    return bpf_map__fd(find_map(map));
  }
  int prog_fd(std::string_view prog) const override {
    require_loaded("prog_fd");
    return bpf_program__fd(find_prog(prog));
  }
  void attach_cgroup(std::string_view prog,
                     const std::string& cgroup_path) override;
  void attach_map(std::string_view prog, std::string_view map,
                  std::uint32_t attach_type) override;
  bool attach_auto(std::string_view prog, bool optional) override;

 private:
  enum class Phase { Open, BeforeLoad, Loaded, Attach, AfterAttach };

  [[noreturn]] void fail(const std::string& what) const {
    throw InstanceError("instance '" + r_.spec->name + "' (plugin " +
                r_.plugin->info.name + "): " + what);
  }
  void require(Phase p, const char* what) const {
    if (phase_ != p)
      fail(std::string(what) + " called outside the hook that allows it");
  }
  void require_loaded(const char* what) const {
    if (phase_ < Phase::Loaded)
      fail(std::string(what) + " called before the object was loaded");
  }
  bpf_map* find_map(std::string_view name) const {
    auto* m = bpf_object__find_map_by_name(obj_.get(), std::string(name).c_str());
    if (!m) fail("no map named '" + std::string(name) + "' in the BPF object");
    return m;
  }
  bpf_program* find_prog(std::string_view name) const {
    auto* p = bpf_object__find_program_by_name(obj_.get(),
                                               std::string(name).c_str());
    if (!p) fail("no program named '" + std::string(name) + "' in the BPF object");
    return p;
  }
  // The plugin's state for this instance (its create()).
  void create_plugin_instance() {
    try {
      plugin_ = r_.plugin->plugin->create(*this);
    } catch (const std::exception& e) {
      fail(e.what());
    }
  }
  void hook(const char* name, void (PluginInstance::*f)()) {
    try {
      (plugin_.get()->*f)();
    } catch (const PluginHookError& e) {
      if (e.from_context) throw InstanceError(e.what());  // already phrased
      fail(std::string(name) + ": " + e.what());
    }
  }

  std::string link_name(const std::string& prog) {
    int n = link_names_[prog]++;
    return n ? prog + "_" + std::to_string(n) : prog;
  }
  bool update_in_place(const std::string& name, const std::string& target,
                       const std::string& prog, int prog_fd);
  void pin_link_fd(int fd, const std::string& name);
  void record_link(const std::string& name, const std::string& prog,
                   const std::string& target) {
    new_.links.push_back({name, prog, target});
    new_.hooks.push_back({prog, target, true, ""});
    attached_.insert(prog);
  }
  void open_object();
  void bind_maps();
  void load_object();
  void pin_objects();

  std::string config_hash_;
  const ResolvedInstance& r_;
  const Manifest& manifest_;
  const PinLayout& layout_;
  std::optional<InstanceState> old_;
  const LoadOptions& lo_;
  SharedMapLookup lookup_;
  std::function<void()> check_cancel_;
  InstancePaths final_;
  InstancePaths staging_;
  Phase phase_ = Phase::Open;

  BpfObject obj_;
  // The plugin's state for this instance; made after the object is open.
  std::unique_ptr<PluginInstance> plugin_;
  InstanceState new_;
  std::vector<BpfLink> links_;  // created by libbpf; pinned in staging
  std::vector<Fd> link_fds_;    // created by bpf_link_create; pinned too
  struct UpdatedLink {
    Fd link;
    Fd old_prog;
  };
  std::vector<UpdatedLink> updated_links_;
  struct Attachment {
    Fd prog, map;
    bpf_attach_type type;
  };
  std::vector<Attachment> attachments_;  // non-link fallbacks
  std::set<std::string> attached_;
  std::set<std::string> reused_maps_;
  std::map<std::string, int> link_names_;
  bool staging_created_ = false;
};

void InstanceTxn::set_global(std::string_view var, const void* data,
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

void InstanceTxn::open_object() {
  auto bytes = r_.plugin->plugin->bpf_object();
  LibbpfLogCapture capture;
  bpf_object_open_opts opts{};
  opts.sz = sizeof(opts);
  opts.object_name = r_.plugin->info.name.c_str();
  obj_.reset(bpf_object__open_mem(bytes.data(), bytes.size(), &opts));
  if (!obj_)
    fail("libbpf cannot open the BPF object: " + errno_text(errno) + "\n" +
         verifier_log_tail(capture.text(), "", 10));
}

// Shared maps become the owner's map; own maps keep their pinned contents
// on update (unless --reset-maps). Runs after before_load, which may have
// resized maps, so the comparison is against the final definitions.
void InstanceTxn::bind_maps() {
  std::set<std::string> shared;
  for (auto& share : r_.spec->maps) {
    auto* map = find_map(share.map);
    int fd = lookup_(share.instance, share.remote_map);
    auto def = pinned_map_def(fd);
    if (!def) fail("cannot inspect map '" + share.remote_map + "' of instance '" +
                   share.instance + "'");
    if (auto why = map_mismatch(map, *def); !why.empty())
      fail("map '" + share.map + "' cannot be instance '" + share.instance +
           "''s map '" + share.remote_map + "': " + why);
    if (bpf_map__reuse_fd(map, fd) != 0)
      fail("cannot reuse map '" + share.remote_map + "': " + errno_text(errno));
    shared.insert(share.map);
    new_.shared_maps.push_back({share.map, share.instance,
                                layout_.instance(share.instance).map(share.remote_map)});
  }
  bpf_map* map;
  bpf_object__for_each_map(map, obj_.get()) {
    if (bpf_map__is_internal(map)) continue;
    std::string name = bpf_map__name(map);
    if (shared.count(name)) continue;
    new_.maps.push_back(name);
    if (!old_ || lo_.reset_maps || lo_.dry_run) continue;
    auto pin = final_.map(name);
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd) continue;
    auto def = pinned_map_def(fd.get());
    if (!def) continue;
    if (auto why = map_mismatch(map, *def); !why.empty())
      fail("map '" + name + "' changed definition (" + why +
           "); load with --reset-maps to recreate it (its contents are lost)");
    if (bpf_map__reuse_fd(map, fd.get()) != 0)
      fail("cannot reuse pinned map " + pin + ": " + errno_text(errno));
    reused_maps_.insert(name);
    spdlog::debug("{}: keeping contents of map {}", r_.spec->name, name);
  }
}

void InstanceTxn::load_object() {
  LibbpfLogCapture capture;
  if (bpf_object__load(obj_.get()) == 0) {
    if (!capture.text().empty())
      spdlog::debug("libbpf while loading {}:\n{}", r_.spec->name, capture.text());
    return;
  }
  int err = errno;
  auto prog = failing_program(capture.text());
  if (!prog.empty())
    fail("program '" + prog + "' was rejected by the verifier (" +
         errno_text(err) + "):\n" +
         verifier_log_tail(capture.text(), prog));
  fail("loading the BPF object failed (" + errno_text(err) + "):\n" +
       verifier_log_tail(capture.text(), "", 12));
}

void InstanceTxn::pin_objects() {
  // Under the lock, after recovery: a staging directory here now is not
  // ours to remove.
  if (::mkdir(staging_.dir.c_str(), 0700) != 0)
    fail("cannot create " + staging_.dir + ": " + errno_text(errno));
  staging_created_ = true;
  write_state(staging_.state(), new_);  // incomplete: marks the directory ours
  for (auto& sub : {staging_.maps_dir(), staging_.progs_dir(), staging_.links_dir()})
    if (::mkdir(sub.c_str(), 0700) != 0)
      fail("cannot create " + sub + ": " + errno_text(errno));

  for (auto& name : new_.maps) {
    if (reused_maps_.count(name)) continue;
    auto path = staging_.map(name);
    if (bpf_obj_pin(bpf_map__fd(find_map(name)), path.c_str()) != 0)
      fail("cannot pin map '" + name + "': " + errno_text(errno));
  }
  bpf_program* p;
  bpf_object__for_each_program(p, obj_.get()) {
    if (!bpf_program__autoload(p)) continue;
    std::string name = bpf_program__name(p);
    auto path = staging_.prog(name);
    if (bpf_obj_pin(bpf_program__fd(p), path.c_str()) != 0)
      fail("cannot pin program '" + name + "': " + errno_text(errno));
    new_.progs.push_back(name);
    bpf_prog_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) == 0) {
      new_.prog_ids[name] = info.id;
      char tag[2 * BPF_TAG_SIZE + 1];
      for (int i = 0; i < BPF_TAG_SIZE; ++i)
        std::snprintf(tag + 2 * i, 3, "%02x", info.tag[i]);
      new_.prog_tags[name] = tag;
    }
  }
}

void InstanceTxn::stage() {
  new_.instance = r_.spec->name;
  new_.plugin = r_.plugin->info.name;
  new_.plugin_version = r_.plugin->info.version;
  new_.plugin_path = r_.plugin->path;
  new_.plugin_sha256 = r_.plugin->sha256;
  new_.api_version = to_string(r_.plugin->api);
  new_.manifest_path =
      manifest_.absolute_path.empty() ? manifest_.path : manifest_.absolute_path;
  new_.manifest_hash = fnv1a_hex(manifest_.text);
  new_.config_hash = config_hash_;
  new_.loaded_at = now_utc();
  new_.options = options_to_json(r_.options);

  open_object();
  create_plugin_instance();
  phase_ = Phase::BeforeLoad;
  hook("before_load", &PluginInstance::before_load);
  bind_maps();
  check_cancel_();
  load_object();
  check_cancel_();
  phase_ = Phase::Loaded;
  hook("after_load", &PluginInstance::after_load);
  if (lo_.dry_run) return;

  pin_objects();
  check_cancel_();
  phase_ = Phase::Attach;
  hook("attach", &PluginInstance::attach);
  bpf_program* p;
  bpf_object__for_each_program(p, obj_.get()) {
    if (bpf_program__autoload(p) && !attached_.count(bpf_program__name(p)))
      attach_auto(bpf_program__name(p), false);
  }
  phase_ = Phase::AfterAttach;
  hook("after_attach", &PluginInstance::after_attach);
  new_.complete = true;
  write_state(staging_.state(), new_);
}

bool InstanceTxn::update_in_place(const std::string& name,
                                  const std::string& target,
                                  const std::string& prog, int prog_fd) {
  if (!old_) return false;
  auto it = std::find_if(old_->links.begin(), old_->links.end(),
                         [&](auto& l) { return l.name == name; });
  if (it == old_->links.end() || it->target != target) return false;
  auto pin = final_.link(name);
  Fd link(bpf_obj_get(pin.c_str()));
  if (!link) return false;
  bpf_link_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(link.get(), &info, &len) != 0) return false;
  Fd old_prog(bpf_prog_get_fd_by_id(info.prog_id));
  if (!old_prog) return false;
  if (bpf_link_update(link.get(), prog_fd, nullptr) != 0) {
    spdlog::debug("{}: link {} cannot be updated in place ({}); replacing it",
                  r_.spec->name, name, errno_text(errno));
    return false;
  }
  spdlog::debug("{}: link {} now runs the new '{}'", r_.spec->name, name, prog);
  updated_links_.push_back({std::move(link), std::move(old_prog)});
  record_link(name, prog, target);
  return true;
}

void InstanceTxn::pin_link_fd(int fd, const std::string& name) {
  auto path = staging_.link(name);
  if (bpf_obj_pin(fd, path.c_str()) != 0)
    fail("cannot pin link '" + name + "': " + errno_text(errno));
}

void InstanceTxn::attach_cgroup(std::string_view prog_name,
                                const std::string& cgroup_path) {
  require(Phase::Attach, "attach_cgroup");
  std::string prog(prog_name);
  auto* p = find_prog(prog);
  std::string path = cgroup_path;
  if (path.empty() || path[0] != '/') path = cgroup2_root() + "/" + path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  Fd cg(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg) fail("cgroup " + path + ": " + errno_text(errno));
  auto type = libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(p));
  std::string target = "cgroup:" + path + " (" + (type ? type : "?") + ")";
  auto name = link_name(prog);
  if (update_in_place(name, target, prog, bpf_program__fd(p))) return;
  BpfLink link(bpf_program__attach_cgroup(p, cg.get()));
  if (!link) {
    int err = errno;
    fail("cannot attach program '" + prog + "' to cgroup " + path + ": " +
         errno_text(err) +
         (err == EPERM ? " (a program attached there without multi-attach "
                         "blocks it; bpfmgr never replaces programs it did "
                         "not attach)"
                       : ""));
  }
  pin_link_fd(bpf_link__fd(link.get()), name);
  links_.push_back(std::move(link));
  record_link(name, prog, target);
}

void InstanceTxn::attach_map(std::string_view prog_name, std::string_view map,
                             std::uint32_t attach_type_raw) {
  auto attach_type = static_cast<bpf_attach_type>(attach_type_raw);
  require(Phase::Attach, "attach_map");
  std::string prog(prog_name);
  auto* p = find_prog(prog);
  int map_fd = bpf_map__fd(find_map(map));
  auto type_str = libbpf_bpf_attach_type_str(attach_type);
  std::string target =
      "map:" + std::string(map) + " (" + (type_str ? type_str : "?") + ")";
  auto name = link_name(prog);
  if (update_in_place(name, target, prog, bpf_program__fd(p))) return;

  std::uint32_t ids[8], count = 8, flags = 0;
  if (bpf_prog_query(map_fd, attach_type, 0, &flags, ids, &count) == 0 &&
      count > 0)
    fail("map '" + std::string(map) + "' already has a " +
         (type_str ? type_str : "?") + " program (id " + std::to_string(ids[0]) +
         "); bpfmgr never replaces programs it did not attach");

  // sockmap links exist since Linux 6.10; older kernels get a plain
  // attachment that unpin undoes with bpf_prog_detach2.
  Fd link(bpf_link_create(bpf_program__fd(p), map_fd, attach_type, nullptr));
  if (link) {
    pin_link_fd(link.get(), name);
    link_fds_.push_back(std::move(link));
    record_link(name, prog, target);
    return;
  }
  if (errno != EINVAL && errno != EOPNOTSUPP)
    fail("cannot attach program '" + prog + "' to map '" + std::string(map) +
         "': " + errno_text(errno));
  if (bpf_prog_attach(bpf_program__fd(p), map_fd, attach_type, 0) != 0)
    fail("cannot attach program '" + prog + "' to map '" + std::string(map) +
         "': " + errno_text(errno));
  attachments_.push_back({Fd(dup(bpf_program__fd(p))), Fd(dup(map_fd)), attach_type});
  std::string map_pin;
  for (auto& s : new_.shared_maps)
    if (s.map == map) map_pin = s.pin;
  if (map_pin.empty()) map_pin = final_.map(map);
  new_.map_attachments.push_back({prog, map_pin, int(attach_type)});
  new_.hooks.push_back({prog, target, true, ""});
  attached_.insert(prog);
}

bool InstanceTxn::attach_auto(std::string_view prog_name, bool optional) {
  require(Phase::Attach, "attach_auto");
  std::string prog(prog_name);
  auto* p = find_prog(prog);
  if (!bpf_program__autoload(p)) return false;
  std::string target = bpf_program__section_name(p);
  auto name = link_name(prog);
  if (update_in_place(name, target, prog, bpf_program__fd(p))) return true;
  LibbpfLogCapture capture;
  errno = 0;
  BpfLink link(bpf_program__attach(p));
  if (!link) {
    int err = errno;
    std::string reason = errno_text(err);
    if (err == EOPNOTSUPP)
      reason = "section '" + target +
               "' has no automatic attach point; the plugin must attach it "
               "in attach()";
    else if (err == ENOENT)
      reason = "hook " + target + " does not exist on this kernel";
    if (!optional) fail("cannot attach program '" + prog + "': " + reason);
    spdlog::warn("{}: optional hook {} not attached: {}", r_.spec->name,
                 target, reason);
    new_.hooks.push_back({prog, target, false, reason});
    attached_.insert(prog);
    return false;
  }
  pin_link_fd(bpf_link__fd(link.get()), name);
  links_.push_back(std::move(link));
  record_link(name, prog, target);
  return true;
}

void InstanceTxn::commit() {
  commit_staged(layout_, r_.spec->name, new_, old_);
  // Committed: the pins hold every reference now.
  links_.clear();
  link_fds_.clear();
  updated_links_.clear();
  attachments_.clear();
}

void InstanceTxn::rollback(std::vector<std::string>& errors) noexcept {
  for (auto& u : updated_links_)
    if (bpf_link_update(u.link.get(), u.old_prog.get(), nullptr) != 0)
      errors.push_back(r_.spec->name + ": cannot restore the previous program of a link: " +
                       errno_text(errno));
  updated_links_.clear();
  for (auto& a : attachments_)
    bpf_prog_detach2(a.prog.get(), a.map.get(), a.type);
  attachments_.clear();
  if (staging_created_) remove_owned_dir(staging_, errors);
  links_.clear();  // unpinned links detach as their last fd closes
  link_fds_.clear();
  obj_.reset();
}

}  // namespace

namespace {

// Ctrl-C (or a service manager's TERM) during a load: before the commit
// the load stops at the next step and rolls back; during the commit it
// says "committing, please wait" and finishes. SIGKILL cannot be caught;
// the next load or unpin finishes or reverts what it leaves (commit.hpp).
std::atomic<int> g_signal{0};
std::atomic<bool> g_committing{false};

extern "C" void on_load_signal(int sig) {
  g_signal.store(sig);
  if (g_committing.load()) {
    static const char msg[] = "bpfmgr: committing, please wait\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  }
}

class LoadSignals {
 public:
  explicit LoadSignals(bool install) : installed_(install) {
    g_signal = 0;
    g_committing = false;
    if (!installed_) return;
    struct sigaction sa {};
    sa.sa_handler = on_load_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~LoadSignals() {
    g_committing = false;
    if (!installed_) return;
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }
  LoadSignals(const LoadSignals&) = delete;
  LoadSignals& operator=(const LoadSignals&) = delete;

 private:
  static constexpr std::array<int, 4> kSignals{SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  bool installed_;
  std::array<struct sigaction, 4> old_{};
};

std::string signal_name(int sig) {
  if (sig == 0) return "cancellation";
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

std::vector<SharedMapProblem> shared_map_problems(const ResolvedManifest& rm) {
  std::vector<SharedMapProblem> out;
  std::set<std::string> involved;
  for (auto& r : rm.instances)
    for (auto& share : r.spec->maps) {
      involved.insert(r.spec->name);
      involved.insert(share.instance);
    }
  if (involved.empty()) return out;
  PinLayout layout(rm.manifest.pin_root.empty() ? "/" : rm.manifest.pin_root);
  LoadOptions lo;
  lo.dry_run = true;
  std::map<std::string, std::unique_ptr<InstanceTxn>> specs;
  auto no_lookup = [](const std::string&, const std::string&) -> int { return -1; };
  for (auto& r : rm.instances) {
    if (!involved.count(r.spec->name)) continue;
    auto txn = std::make_unique<InstanceTxn>(r, rm.manifest, layout, std::nullopt, lo,
                                             no_lookup, "", [] {});
    try {
      txn->open_for_spec();
    } catch (const std::exception& e) {
      out.push_back({r.spec->name, r.spec->plugin_pos, e.what()});
      continue;
    }
    specs[r.spec->name] = std::move(txn);
  }
  for (auto& r : rm.instances)
    for (auto& share : r.spec->maps) {
      auto mine = specs.find(r.spec->name), theirs = specs.find(share.instance);
      if (mine == specs.end() || theirs == specs.end()) continue;
      auto* a = mine->second->spec_map(share.map);
      auto* b = theirs->second->spec_map(share.remote_map);
      if (!a || !b) continue;  // resolve reported it
      MapDef owner{bpf_map__type(b), bpf_map__key_size(b), bpf_map__value_size(b),
                   bpf_map__max_entries(b)};
      if (auto why = map_mismatch(a, owner); !why.empty())
        out.push_back({r.spec->name, share.pos,
                       "map '" + share.map + "' of instance '" + r.spec->name +
                           "' cannot be instance '" + share.instance + "''s map '" +
                           share.remote_map + "': " + why +
                           " (after both plugins' before_load)"});
    }
  return out;
}

Interrupted::Interrupted(int sig)
    : Error("interrupted by " + signal_name(sig) +
            " before the commit; the load was rolled back, nothing was changed"),
      signal(sig) {}

LoadReport load_manifest(const ResolvedManifest& rm, const LoadOptions& lo) {
  const auto& m = rm.manifest;
  LoadReport report;
  ensure_bpffs();
  ensure_tracefs();
  if (auto why = pin_root_problem(m.pin_root); !why.empty()) throw Error(why);
  PinLayout layout(m.pin_root);
  // Taken before signals are caught: Ctrl-C while waiting for another
  // process simply ends this one, nothing done.
  std::optional<PinRootLock> lock;
  if (!lo.dry_run) lock.emplace(PinRootLock::acquire(layout.root(), lo.lock_wait));
  LoadSignals signals(lo.catch_signals);
  auto check_cancel = [&] {
    if (int sig = g_signal.load()) throw Interrupted(sig);
    if (lo.cancel && lo.cancel->load()) throw Interrupted(0);
  };

  bool created_root = false;
  ObservedPinRoot seen;
  if (!lo.dry_run) {
    std::vector<std::string> errors;
    report.recovered = recover_pin_root(layout, errors);
    if (!errors.empty()) {
      std::string msg = "cannot recover what an interrupted load left under " + layout.root() + ":";
      for (auto& e : errors) msg += "\n  " + e;
      throw Error(msg);
    }
    std::error_code ec;
    if (!fs::exists(layout.root(), ec)) {
      fs::create_directories(layout.root(), ec);
      if (ec) throw Error("cannot create pin root " + layout.root() + ": " + ec.message());
      created_root = true;
    }
    seen = observe_pin_root(layout);
    std::string foreign;
    for (auto& r : rm.instances)
      if (auto* f = seen.find_foreign(r.spec->name))
        foreign += "\n  " + layout.instance(r.spec->name).dir + ": " + f->why;
    if (!foreign.empty())
      throw Error("these paths are not bpfmgr's, and bpfmgr never touches what it did not "
                  "make; remove them or rename the instances:" + foreign);
  }

  std::vector<std::unique_ptr<InstanceTxn>> txns;
  std::map<std::string, InstanceTxn*> staged;
  std::vector<Fd> borrowed;
  auto lookup = [&](const std::string& inst, const std::string& map) -> int {
    if (auto it = staged.find(inst); it != staged.end()) {
      int fd = it->second->own_map_fd(map);
      if (fd >= 0) return fd;
    }
    auto pin = layout.instance(inst).map(map);
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd)
      throw Error("instance '" + inst + "' has no pinned map '" + map +
                  "' (" + pin + ": " + errno_text(errno) + ")");
    borrowed.push_back(std::move(fd));
    return borrowed.back().get();
  };

  try {
    for (auto& r : rm.instances) {
      check_cancel();
      const auto& name = r.spec->name;
      auto paths = layout.instance(name);
      std::optional<InstanceState> old;
      if (!lo.dry_run) {
        if (auto it = seen.records.find(name); it != seen.records.end()) {
          if (it->second.state) {
            old = it->second.state;
          } else {
            // Recognisably ours but unreadable: replace it whole.
            std::vector<std::string> errors;
            spdlog::warn("{}: {}; removing it to load it again", name, it->second.why);
            if (!remove_owned_dir(paths, errors))
              throw Error("cannot replace instance '" + name + "' (" + it->second.why +
                          "): " + errors.front());
            report.repaired.push_back(name + ": " + it->second.why);
          }
        }
      }
      bool owner_restaged = false;
      for (auto& share : r.spec->maps)
        if (auto it = staged.find(share.instance);
            it != staged.end() && it->second->recreated_map(share.remote_map))
          owner_restaged = true;
      // Hashes the plugin's whole BPF object: once per instance.
      auto hash = config_hash(r, m);
      // "Unchanged" means the kernel runs what the record says, not only
      // that the input hashes the same.
      std::string drift = old ? kernel_drift(paths, *old) : "";
      if (old && old->complete && !lo.reset_maps && !owner_restaged &&
          old->config_hash == hash && drift.empty()) {
        report.unchanged.push_back(name);
        continue;
      }
      if (!drift.empty()) {
        spdlog::warn("{}: {}; replacing it", name, drift);
        report.repaired.push_back(name + ": " + drift);
      }
      if (old && !old->complete) old.reset();
      bool is_update = old.has_value();
      auto txn = std::make_unique<InstanceTxn>(r, m, layout, std::move(old), lo, lookup,
                                               std::move(hash), check_cancel);
      staged[name] = txn.get();
      txns.push_back(std::move(txn));
      txns.back()->stage();
      if (lo.dry_run)
        report.verified.push_back(name);
      else
        (is_update ? report.updated : report.loaded).push_back(name);
    }
    check_cancel();
  } catch (Error& e) {
    std::vector<std::string> errors;
    for (auto it = txns.rbegin(); it != txns.rend(); ++it) (*it)->rollback(errors);
    if (created_root) ::rmdir(layout.root().c_str());
    if (errors.empty()) throw;
    std::string msg = std::string(e.what()) + "\nthe rollback could not undo everything:";
    for (auto& x : errors) msg += "\n  " + x;
    throw RollbackIncomplete(msg);
  } catch (...) {
    std::vector<std::string> errors;
    for (auto it = txns.rbegin(); it != txns.rend(); ++it) (*it)->rollback(errors);
    if (created_root) ::rmdir(layout.root().c_str());
    throw;
  }
  if (lo.dry_run) return report;

  // From here on the load goes forward: the journal names every instance
  // about to be committed, so a crash at any rename is finished by the
  // next load or unpin; a signal only makes us say so.
  std::vector<std::string> errors;
  if (!txns.empty()) {
    Journal journal;
    for (auto& t : txns) journal.committing.push_back(t->instance_name());
    journal.manifest_path = m.absolute_path.empty() ? m.path : m.absolute_path;
    journal.pid = ::getpid();
    g_committing = true;
    if (g_signal.load()) on_load_signal(g_signal.load());
    write_journal(layout.journal(), journal);
    for (auto& t : txns) {
      try {
        t->commit();
      } catch (const std::exception& e) {
        errors.push_back(e.what());
      }
    }
    if (errors.empty() && ::unlink(layout.journal().c_str()) != 0)
      errors.push_back("cannot remove the journal " + layout.journal() + ": " +
                       errno_text(errno));
  }

  // Instances an earlier load of this manifest made that it no longer has;
  // instances of other manifests are left alone.
  std::set<std::string> wanted;
  for (auto& r : rm.instances) wanted.insert(r.spec->name);
  PluginRegistry registry(m.plugin_path);
  if (errors.empty() && !m.absolute_path.empty()) {
    auto now = observe_pin_root(layout);
    for (auto& name : now.instances) {
      if (wanted.count(name)) continue;
      auto& st = now.records.at(name).state;
      if (st && st->manifest_path == m.absolute_path &&
          unpin_instance_locked(layout, name, registry, errors))
        report.removed.push_back(name);
    }
  }
  report.interrupted_by = g_signal.load();
  if (!errors.empty()) {
    std::string msg = "the load did not complete:";
    for (auto& e : errors) msg += "\n  " + e;
    throw CommitIncomplete(msg);
  }
  return report;
}

}  // namespace bpfmgr
