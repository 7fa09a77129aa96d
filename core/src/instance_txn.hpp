// One instance's part of a load transaction (loader.hpp): on the object
// resolve prepared (instance_object.hpp), bind shared and kept maps, load,
// run the plugin's hooks, attach, then have the staging directory written
// (pin_txn.hpp: record, pins, attachments no fd holds); then commit it into
// place or roll it back.
#pragma once

#include <bpf/libbpf.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "handles.hpp"
#include "pin_txn.hpp"
#include "instance_object.hpp"
#include "load_options.hpp"
#include "object_spec.hpp"
#include "pin_layout.hpp"
#include "plugins.hpp"
#include "resolve.hpp"
#include "state.hpp"
#include "errno_text.hpp"

namespace bpfmgr {

using SharedMapLookup =
    std::function<int(const std::string& instance, const std::string& map)>;

// One instance's part of a load transaction, on the instance's prepared
// object (which it closes when it ends); the attachments its plugin's
// attach() asks the object for are made here.
class InstanceTxn final : public InstanceAttacher {
 public:
  InstanceTxn(const ResolvedInstance& r, std::shared_ptr<InstanceObject> object,
              const Manifest& m, const PinLayout& layout, std::optional<InstanceState> old,
              const LoadOptions& lo, SharedMapLookup lookup, std::string config_hash,
              std::function<void()> check_cancel)
      : r_(r),
        object_(std::move(object)),
        config_hash_(std::move(config_hash)),
        manifest_(m),
        layout_(layout),
        final_(layout.instance(r.spec->name)),
        old_(std::move(old)),
        lo_(lo),
        lookup_(std::move(lookup)),
        check_cancel_(std::move(check_cancel)),
        staging_(layout.staging(r.spec->name)) {
    object_->begin_load(*this);
    obj_ = object_->object();
  }
  ~InstanceTxn() { object_->close(); }
  InstanceTxn(const InstanceTxn&) = delete;
  InstanceTxn& operator=(const InstanceTxn&) = delete;

  void stage();
  // What the commit moves into place (pin_txn.hpp). The fds this holds are
  // released when it ends; once committed, the pins hold every reference.
  StagedInstance staged() const { return {r_.spec->name, new_, old_}; }
  // Appends what it could not undo to `errors`.
  void rollback(std::vector<std::string>& errors) noexcept;

  // Map fd of this (staged) instance, for instances sharing its maps.
  int own_map_fd(const std::string& map) const {
    auto* m = bpf_object__find_map_by_name(obj_, map.c_str());
    return m ? bpf_map__fd(m) : -1;
  }
  bool recreated_map(const std::string& map) const {
    return old_ && !reused_maps_.count(map);
  }

  // ---- InstanceAttacher (phase checked by the object)
  void attach_cgroup(std::string_view prog, const std::string& cgroup_path) override;
  void attach_map(std::string_view prog, std::string_view map,
                  std::uint32_t attach_type) override;
  bool attach_auto(std::string_view prog, bool optional) override;

 private:
  std::string link_name(const std::string& prog) {
    int n = link_names_[prog]++;
    return n ? prog + "_" + std::to_string(n) : prog;
  }
  bool update_in_place(const std::string& name, const std::string& target,
                       const std::string& prog, int prog_fd);
  void record_link(const std::string& name, const std::string& prog,
                   const std::string& target) {
    new_.links.push_back({name, prog, target});
    new_.hooks.push_back({prog, target, true, ""});
    attached_.insert(prog);
  }
  void bind_maps();
  void load_object();
  void collect_pins();

  [[noreturn]] void fail(const std::string& what) const { object_->fail(what); }

  const ResolvedInstance& r_;
  std::shared_ptr<InstanceObject> object_;
  bpf_object* obj_ = nullptr;  // object_'s, until rollback() or the end closes it
  std::string config_hash_;
  const Manifest& manifest_;
  const PinLayout& layout_;
  InstancePaths final_;
  std::optional<InstanceState> old_;
  const LoadOptions& lo_;
  SharedMapLookup lookup_;
  std::function<void()> check_cancel_;
  InstancePaths staging_;

  InstanceState new_;
  StagedObjects staged_;        // what write_staged pins and attaches
  std::vector<BpfLink> links_;  // created by libbpf; held until pinned
  std::vector<Fd> link_fds_;    // created by bpf_link_create; held too
  struct UpdatedLink {
    Fd link;
    Fd old_prog;
  };
  std::vector<UpdatedLink> updated_links_;
  std::set<std::string> attached_;
  std::set<std::string> reused_maps_;
  std::map<std::string, int> link_names_;
  bool staging_created_ = false;
};

}  // namespace bpfmgr
