#include "instance_txn.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <set>

#include <bpfmgr/cgroup.hpp>

#include "pin_txn.hpp"
#include "pin_tree.hpp"
#include "errno_text.hpp"
#include "fingerprint.hpp"
#include "verifier_log.hpp"
#include "record_json.hpp"

namespace bpfmgr {

namespace {

std::string failing_program(const std::string& captured) {
  // libbpf: "prog 'NAME': BPF program load failed: ..."
  auto p = captured.find("': BPF program load failed");
  if (p == std::string::npos) p = captured.find("': failed to load");
  if (p == std::string::npos) return {};
  auto b = captured.rfind("prog '", p);
  if (b == std::string::npos) return {};
  return captured.substr(b + 6, p - b - 6);
}

}  // namespace

// Shared maps become the owner's map; own maps keep their pinned contents
// on update (unless --reset-maps). Runs after before_load, which may have
// resized maps, so the comparison is against the final definitions.
void InstanceTxn::bind_maps() {
  std::set<std::string> shared;
  for (auto& share : r_.spec->maps) {
    auto* map = object_->find_map(share.map);
    int fd = lookup_(share.instance, share.remote_map);
    auto def = loaded_map_spec(fd);
    if (!def) fail("cannot inspect map '" + share.remote_map + "' of instance '" +
                   share.instance + "'");
    if (auto why = map_mismatch(map_spec(map), *def); !why.empty())
      fail("map '" + share.map + "' cannot be instance '" + share.instance +
           "''s map '" + share.remote_map + "': " + why);
    if (bpf_map__reuse_fd(map, fd) != 0)
      fail("cannot reuse map '" + share.remote_map + "': " + errno_text(errno));
    shared.insert(share.map);
    new_.shared_maps.push_back({share.map, share.instance,
                                layout_.instance(share.instance).map(share.remote_map)});
  }
  bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    if (bpf_map__is_internal(map)) continue;
    std::string name = bpf_map__name(map);
    if (shared.count(name)) continue;
    new_.maps.push_back(name);
    if (!old_ || lo_.reset_maps || lo_.dry_run) continue;
    auto pin = final_.map(name);
    Fd fd(bpf_obj_get(pin.c_str()));
    if (!fd) continue;
    auto def = loaded_map_spec(fd.get());
    if (!def) continue;
    if (auto why = map_mismatch(map_spec(map), *def); !why.empty())
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
  if (bpf_object__load(obj_) == 0) {
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

// What the staging directory will pin, and the ids and tags the record
// keeps of each program.
void InstanceTxn::collect_pins() {
  for (auto& name : new_.maps)
    if (!reused_maps_.count(name))
      staged_.maps.push_back({name, bpf_map__fd(object_->find_map(name))});
  bpf_program* p;
  bpf_object__for_each_program(p, obj_) {
    if (!bpf_program__autoload(p)) continue;
    std::string name = bpf_program__name(p);
    staged_.progs.push_back({name, bpf_program__fd(p)});
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
  new_.before_unpin = r_.plugin->plugin->api().before_unpin != nullptr;
  new_.manifest_path =
      manifest_.absolute_path.empty() ? manifest_.path : manifest_.absolute_path;
  new_.manifest_hash = fnv1a_hex(manifest_.text);
  new_.config_hash = config_hash_;
  new_.input_fingerprint = r_.input_fingerprint;
  new_.loaded_at = utc_now_text();
  new_.options = options_to_json(r_.options);
  new_.degraded = r_.kernel.degraded;

  bind_maps();
  check_cancel_();
  load_object();
  check_cancel_();
  object_->run_hook(InstanceObject::Phase::Loaded, "after_load", &PluginInstance::after_load);
  if (lo_.dry_run) return;
  collect_pins();

  // Attached before anything is pinned: until write_staged pins them, the
  // links live only as this process's fds, and a crash detaches them. A
  // link switched in place runs the new program at once (a crash before
  // the commit leaves drift that status shows and the next load repairs;
  // a failure switches it back). What outlives the process is made by
  // write_staged, after the record that names it.
  check_cancel_();
  object_->run_hook(InstanceObject::Phase::Attach, "attach", &PluginInstance::attach);
  bpf_program* p;
  bpf_object__for_each_program(p, obj_) {
    if (bpf_program__autoload(p) && !attached_.count(bpf_program__name(p)))
      attach_auto(bpf_program__name(p), false);
  }
  check_cancel_();
  new_.complete = true;
  try {
    write_staged(staging_, new_, staged_, staging_created_);
  } catch (const InstanceError&) {
    throw;
  } catch (const Error& e) {
    fail(e.what());
  }
  object_->run_hook(InstanceObject::Phase::AfterAttach, "after_attach",
                    &PluginInstance::after_attach);
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

void InstanceTxn::attach_cgroup(std::string_view prog_name,
                                const std::string& cgroup_path) {
  std::string prog(prog_name);
  auto* p = object_->find_prog(prog);
  // The rule validate checked the option by (<bpfmgr/cgroup.hpp>), and the
  // directory it checked is the one attached to.
  Cgroup cgroup;
  int cg_fd = -1;
  if (auto why = resolve_cgroup(cgroup_path, cgroup, &cg_fd, object_->cgroup2_root());
      !why.empty())
    fail(why);
  Fd cg(cg_fd);
  const std::string& path = cgroup.path;
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
  staged_.links.push_back({name, bpf_link__fd(link.get())});
  links_.push_back(std::move(link));
  record_link(name, prog, target);
}

void InstanceTxn::attach_map(std::string_view prog_name, std::string_view map,
                             std::uint32_t attach_type_raw) {
  auto attach_type = static_cast<bpf_attach_type>(attach_type_raw);
  std::string prog(prog_name);
  auto* p = object_->find_prog(prog);
  int map_fd = bpf_map__fd(object_->find_map(map));
  auto type_str = libbpf_bpf_attach_type_str(attach_type);
  std::string target =
      "map:" + std::string(map) + " (" + (type_str ? type_str : "?") + ")";
  auto name = link_name(prog);
  if (update_in_place(name, target, prog, bpf_program__fd(p))) return;

  std::string map_pin;
  for (auto& s : new_.shared_maps)
    if (s.map == map) map_pin = s.pin;
  if (map_pin.empty()) map_pin = final_.map(map);
  // A plain attachment (before Linux 6.10) that the version being
  // replaced made is this instance's own: the new program takes its
  // place. Anything else there is someone else's.
  Fd replaced;
  std::uint32_t ids[8], count = 8, flags = 0;
  if (bpf_prog_query(map_fd, attach_type, 0, &flags, ids, &count) == 0 && count > 0) {
    if (old_)
      for (auto& a : old_->map_attachments)
        if (a.map_pin == map_pin && a.attach_type == int(attach_type) &&
            old_->prog_ids.count(a.prog) && old_->prog_ids.at(a.prog) == ids[0])
          replaced = Fd(bpf_prog_get_fd_by_id(ids[0]));
    if (!replaced)
      fail("map '" + std::string(map) + "' already has a " + (type_str ? type_str : "?") +
           " program (id " + std::to_string(ids[0]) +
           "); bpfmgr never replaces programs it did not attach");
  }

  // sockmap links exist since Linux 6.10; older kernels get a plain
  // attachment that unpin undoes with bpf_prog_detach2.
  Fd link(bpf_link_create(bpf_program__fd(p), map_fd, attach_type, nullptr));
  if (link) {
    staged_.links.push_back({name, link.get()});
    link_fds_.push_back(std::move(link));
    record_link(name, prog, target);
    return;
  }
  if (errno != EINVAL && errno != EOPNOTSUPP)
    fail("cannot attach program '" + prog + "' to map '" + std::string(map) +
         "': " + errno_text(errno));
  // No fd would hold this attachment, and a shared map outlives the
  // process: write_staged makes it once the staged record names it, so
  // that a crash from then on leaves it for the next command to undo
  // (revert_staged). The kernel's query cannot see one still to be made.
  for (auto& a : staged_.attachments)
    if (a.map_name == map && a.type == attach_type)
      fail("map '" + std::string(map) + "' already has a " + (type_str ? type_str : "?") +
           " program of this instance ('" + a.prog_name + "')");
  new_.map_attachments.push_back({prog, map_pin, int(attach_type)});
  staged_.attachments.push_back({Fd(dup(bpf_program__fd(p))), Fd(dup(map_fd)), attach_type,
                                 prog, std::string(map), std::move(replaced)});
  new_.hooks.push_back({prog, target, true, ""});
  attached_.insert(prog);
}

bool InstanceTxn::attach_auto(std::string_view prog_name, bool optional) {
  std::string prog(prog_name);
  auto* p = object_->find_prog(prog);
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
    // Said once per process: serve retries a failing instance every 5 s,
    // and status shows the hook as missing every time anyway.
    static std::mutex said_mutex;
    static std::set<std::string> said;
    std::lock_guard lock(said_mutex);
    bool first = said.insert(r_.spec->name + '\0' + target + '\0' + reason).second;
    spdlog::log(first ? spdlog::level::warn : spdlog::level::debug,
                "{}: optional hook {} not attached: {}", r_.spec->name, target, reason);
    new_.hooks.push_back({prog, target, false, reason});
    attached_.insert(prog);
    return false;
  }
  staged_.links.push_back({name, bpf_link__fd(link.get())});
  links_.push_back(std::move(link));
  record_link(name, prog, target);
  return true;
}

void InstanceTxn::rollback(std::vector<std::string>& errors) noexcept {
  for (auto& u : updated_links_)
    if (bpf_link_update(u.link.get(), u.old_prog.get(), nullptr) != 0)
      errors.push_back(r_.spec->name + ": cannot restore the previous program of a link: " +
                       errno_text(errno));
  updated_links_.clear();
  // An attachment that replaced the previous version's program gives the
  // place back to it (attaching swaps the program a sockmap runs).
  for (auto& a : staged_.attachments) {
    if (!a.made) continue;
    if (!a.replaced)
      bpf_prog_detach2(a.prog.get(), a.map.get(), a.type);
    else if (bpf_prog_attach(a.replaced.get(), a.map.get(), a.type, 0) != 0)
      errors.push_back(r_.spec->name + ": cannot give map '" + a.map_name +
                       "' its previous program back: " + errno_text(errno));
  }
  staged_.attachments.clear();
  if (staging_created_) remove_owned_dir(staging_, errors);
  links_.clear();  // unpinned links detach as their last fd closes
  link_fds_.clear();
  object_->close();
}

}  // namespace bpfmgr
