// The per-instance state record: what was loaded, from which plugin and
// manifest, and every pin it made. It lives beside the pins, in a one-entry
// array map pinned at <pin_root>/<instance>/state, so it exists exactly as
// long as the pins it describes (bpffs holds no regular files). This says
// what a record holds and when one can be trusted; pin_txn.hpp reads and
// writes the maps.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "degradation.hpp"
#include "pin_layout.hpp"

namespace bpfmgr {

struct LinkRecord {
  std::string name;    // file name under links/
  std::string prog;    // program it runs
  std::string target;  // "cgroup:/sys/fs/cgroup/x", "tracepoint/sock/...", "map:sock_hash:sk_msg_verdict"
};

// An attachment that is not a bpf_link (older kernels' sockmap verdicts):
// undone with bpf_prog_detach2 on the map.
struct MapAttachmentRecord {
  std::string prog;
  std::string map_pin;
  int attach_type = 0;
};

struct SharedMapRecord {
  std::string map;       // name in this instance's object
  std::string instance;  // owner
  std::string pin;       // owner's pin path
};

struct HookRecord {
  std::string prog;
  std::string target;
  bool live = false;
  std::string reason;  // why a dead optional hook is dead
};

struct InstanceState {
  int format = 1;
  std::string instance;
  std::string plugin;
  std::string plugin_version;
  std::string plugin_path;
  // sha256 (hex) of the plugin file that was loaded; status and events run
  // that file's code again only if it still has this content. "" in records
  // written before the field existed.
  std::string plugin_sha256;
  std::string api_version;
  // Whether the plugin has a before_unpin hook; unpin loads the plugin
  // only to run it. True in records written before the field existed.
  bool before_unpin = true;
  std::string manifest_path;
  std::string manifest_hash;
  std::string config_hash;
  // What it was loaded from, told without loading the plugin
  // (input_fingerprint() in resolve.hpp): a reload whose every record
  // matches skips resolving. "" when the plugin file was too fresh to vouch
  // for, and in older records.
  std::string input_fingerprint;
  std::string loaded_at;
  nlohmann::json options = nlohmann::json::object();
  std::vector<std::string> maps;   // own maps, pinned under maps/
  std::vector<SharedMapRecord> shared_maps;
  std::vector<std::string> progs;  // pinned under progs/
  // What the kernel was given for each program: its id (stable while it
  // lives) and tag (hash of its instructions). "Unchanged" and status
  // compare what is pinned and what links run against these.
  std::map<std::string, std::uint32_t> prog_ids;
  std::map<std::string, std::string> prog_tags;
  std::vector<LinkRecord> links;   // pinned under links/
  std::vector<MapAttachmentRecord> map_attachments;
  std::vector<HookRecord> hooks;
  // Absent from records of loads that ran in full (and from older records).
  std::vector<Degradation> degraded;
  bool complete = false;
};

nlohmann::json to_json(const InstanceState& s);
InstanceState state_from_json(const nlohmann::json& j);

// What is pinned at a state path. Only a map bpfmgr made (an array map named
// bpfmgr_state) makes a directory bpfmgr's: Valid or Corrupt. Absent and
// Foreign directories belong to someone else and are never touched.
struct StateLookup {
  enum Kind { Absent, Foreign, Corrupt, Valid } kind = Absent;
  std::optional<InstanceState> state;  // when Valid
  std::string why;                     // when Foreign or Corrupt
  bool ours() const { return kind == Valid || kind == Corrupt; }
};
// A record is input: every name in it must pass the manifest's rules
// (valid_instance_name, pin_name_problem), its instance must be the
// directory it lies in and every map pin it names must be a map of an
// instance under the same pin root; otherwise it is Corrupt, with a
// warning, and none of its names is followed.
StateLookup lookup_state(const std::string& path);
// Why record `s`, read from `state_path`, cannot be trusted ("" when it can).
std::string record_problem(const InstanceState& s, const std::string& state_path);
// The record at `path` when Valid; nullopt otherwise.
std::optional<InstanceState> read_state(const std::string& path);

}  // namespace bpfmgr
