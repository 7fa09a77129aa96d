#include "pin_txn.hpp"

#include <bpf/bpf.h>
#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"
#include "pin_tree.hpp"
#include "errno_text.hpp"

namespace bpfmgr {

// ---------------------------------------------------------- record maps

namespace {
// The largest record map value: any realistic record (option lists of
// CIDRs included) fits; a write fails loudly if one ever outgrows it.
constexpr std::size_t kMaxRecordValueSize = 64 * 1024;
// Room for the input fingerprint a no-op reload adds in place (loader.cpp).
constexpr std::size_t kRecordSlack = 128;
constexpr const char* kRecordMapName = "bpfmgr_state";

// A record map's value: the text's length (4 bytes), the text, zeroes.
// Sized to the text (copying 64 KiB in and out for a 2 KiB record was
// most of a record's cost) plus room for the fingerprint a no-op reload
// adds in place, in steps of 256 bytes, capped at 64 KiB. A staged record
// is written once, complete (write_staged, below).
struct RecordMap {
  Fd fd;
  std::uint32_t value_size = 0;
};

RecordMap create_record_map(const std::string& text, const std::string& path) {
  if (4 + text.size() > kMaxRecordValueSize)
    throw Error("record " + path + " is too large (" + std::to_string(text.size()) +
                " bytes)");
  auto size = std::min((4 + text.size() + kRecordSlack + 255) / 256 * 256,
                       kMaxRecordValueSize);
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  RecordMap map{Fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, kRecordMapName, 4, size, 1, &opts)),
                std::uint32_t(size)};
  if (!map.fd) throw Error("cannot create state map: " + errno_text(errno));
  return map;
}

// What is pinned at `path`: no fd when nothing (or no BPF object) is; a
// value size of 0 when it is not a record map.
RecordMap open_record(const std::string& path) {
  RecordMap map{Fd(bpf_obj_get(path.c_str()))};
  bpf_map_info info{};
  std::uint32_t info_len = sizeof(info);
  if (map.fd && bpf_obj_get_info_by_fd(map.fd.get(), &info, &info_len) == 0 &&
      info.type == BPF_MAP_TYPE_ARRAY && std::string_view(info.name) == kRecordMapName &&
      info.key_size == 4 && info.value_size >= 4)
    map.value_size = info.value_size;
  return map;
}

void write_record(const RecordMap& map, const std::string& text, const std::string& path) {
  std::vector<char> value(map.value_size, 0);
  std::uint32_t len = text.size();
  std::memcpy(value.data(), &len, 4);
  std::memcpy(value.data() + 4, text.data(), text.size());
  std::uint32_t key = 0;
  if (bpf_map_update_elem(map.fd.get(), &key, value.data(), BPF_ANY) != 0)
    throw Error("cannot write record " + path + ": " + errno_text(errno));
}

}  // namespace

RawRecord read_record(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {StateLookup::Absent, "no state record"};
  if (S_ISLNK(st.st_mode)) return {StateLookup::Foreign, "its state record is a symlink"};
  auto map = open_record(path);
  if (!map.fd) return {StateLookup::Foreign, "its 'state' is not a BPF map"};
  auto value_size = map.value_size;
  if (!value_size) return {StateLookup::Foreign, "its 'state' is not a bpfmgr state record"};
  // Not zeroed: the lookup fills all of it.
  auto value = std::make_unique_for_overwrite<char[]>(value_size);
  std::uint32_t key = 0;
  if (bpf_map_lookup_elem(map.fd.get(), &key, value.get()) != 0)
    return {StateLookup::Corrupt, "its state record cannot be read: " + errno_text(errno)};
  std::uint32_t len;
  std::memcpy(&len, value.get(), 4);
  if (len == 0 || len > value_size - 4)
    return {StateLookup::Corrupt, "its state record is empty or damaged"};
  return {StateLookup::Valid, std::string(value.get() + 4, len)};
}

bool is_record_pin(const std::string& path) { return open_record(path).value_size != 0; }

void write_state(const InstancePaths& at, const InstanceState& state) {
  std::string text = to_json(state).dump();
  auto path = at.state();
  auto current = open_record(path);
  if (current.fd && !current.value_size)
    throw Error(path + " is not a bpfmgr state record; left alone");
  if (current.fd && 4 + text.size() <= current.value_size) {
    write_record(current, text, path);
    return;
  }
  // A new map, written in full before it is pinned: a reader never sees
  // half a record. One that outgrew its map is replaced whole: pinned
  // beside it, then renamed over it, so a crash leaves the one record or
  // the other (and maybe the replacement, which remove_owned_dir and the
  // next write remove).
  auto pin = current.fd ? at.state_replacement() : path;
  if (current.fd && open_record(pin).value_size) ::unlink(pin.c_str());
  auto map = create_record_map(text, path);
  write_record(map, text, path);
  if (bpf_obj_pin(map.fd.get(), pin.c_str()) != 0)
    throw Error("cannot pin state map at " + pin + ": " + errno_text(errno));
  if (pin != path && ::rename(pin.c_str(), path.c_str()) != 0)
    throw Error("cannot replace record " + path + ": " + errno_text(errno));
}

void write_journal(const std::string& path, const Journal& j) {
  auto text = nlohmann::json{{"journal", 1},
                             {"committing", j.committing},
                             {"manifest_path", j.manifest_path},
                             {"pid", j.pid}}
                  .dump();
  // A fresh map each time, pinned only once written: the journal appears
  // whole or not at all.
  auto map = create_record_map(text, path);
  write_record(map, text, path);
  ::unlink(path.c_str());
  if (bpf_obj_pin(map.fd.get(), path.c_str()) != 0)
    throw Error("cannot pin the commit journal at " + path + ": " + errno_text(errno));
}

std::optional<Journal> read_journal(const std::string& path) {
  auto raw = read_record(path);
  if (raw.kind != StateLookup::Valid) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(raw.text_or_why);
    Journal out;
    out.committing = j.at("committing").get<std::vector<std::string>>();
    out.manifest_path = j.value("manifest_path", "");
    out.pid = j.value("pid", 0);
    return out;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ------------------------------------------------ staging and commit

namespace {

bool exists_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::uint32_t prog_id_of_fd(int fd) {
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

void write_staged(const InstancePaths& dir, const InstanceState& record,
                  StagedObjects& objects, bool& created) {
  // Under the lock, after recovery: a staging directory here now is not
  // ours to remove.
  if (::mkdir(dir.dir.c_str(), 0700) != 0)
    throw Error("cannot create " + dir.dir + ": " + errno_text(errno));
  created = true;
  write_state(dir, record);
  for (auto& sub : {dir.maps_dir(), dir.progs_dir(), dir.links_dir()})
    if (::mkdir(sub.c_str(), 0700) != 0)
      throw Error("cannot create " + sub + ": " + errno_text(errno));
  auto pin_all = [&](PinKind kind, const char* what, const std::vector<StagedObjects::Pin>& pins) {
    for (auto& p : pins)
      if (bpf_obj_pin(p.fd, dir.pin(kind, p.name).c_str()) != 0)
        throw Error(std::string("cannot pin ") + what + " '" + p.name + "': " + errno_text(errno));
  };
  pin_all(PinKind::Map, "map", objects.maps);
  pin_all(PinKind::Prog, "program", objects.progs);
  pin_all(PinKind::Link, "link", objects.links);
  for (auto& a : objects.attachments) {
    if (bpf_prog_attach(a.prog.get(), a.map.get(), a.type, 0) != 0)
      throw Error("cannot attach program '" + a.prog_name + "' to map '" + a.map_name +
                  "': " + errno_text(errno));
    a.made = true;
  }
}

void commit_instances(const PinLayout& layout, const std::string& manifest_path,
                      const std::vector<StagedInstance>& staged,
                      std::vector<std::string>& errors) {
  if (staged.empty()) return;
  Journal journal;
  for (auto& s : staged) journal.committing.push_back(s.name);
  journal.manifest_path = manifest_path;
  journal.pid = ::getpid();
  write_journal(layout.journal(), journal);
  for (auto& s : staged) {
    try {
      commit_staged(layout, s.name, s.staged, s.old);
    } catch (const std::exception& e) {
      errors.push_back(e.what());
    }
  }
  if (errors.empty() && ::unlink(layout.journal().c_str()) != 0)
    errors.push_back("cannot remove the journal " + layout.journal() + ": " + errno_text(errno));
}

void commit_staged(const PinLayout& layout, const std::string& name,
                   const InstanceState& staged, const std::optional<InstanceState>& old) {
  auto fin = layout.instance(name), stg = layout.staging(name);
  auto fail = [&](const std::string& what) {
    throw Error("commit of instance '" + name + "' failed: " + what + " (" +
                errno_text(errno) + "); the journal " + layout.journal() +
                " stays, so the next `bpfmgr load` or `unpin` finishes it");
  };
  if (!exists_nofollow(fin.dir)) {
    // New instance: one rename, the record travels with its pins.
    if (::rename(stg.dir.c_str(), fin.dir.c_str()) != 0)
      fail("cannot rename " + stg.dir + " to " + fin.dir);
    return;
  }
  for (auto& sub : {fin.maps_dir(), fin.progs_dir(), fin.links_dir()})
    if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create " + sub);
  auto move_in = [&](const std::string& from, const std::string& to) {
    if (!exists_nofollow(from)) return;  // moved before a crash, or kept
    if (::rename(from.c_str(), to.c_str()) != 0) fail("cannot rename " + from + " to " + to);
  };
  auto remove_pin = [&](const std::string& path) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail("cannot remove " + path);
  };
  std::set<std::string> new_links, new_progs, new_maps(staged.maps.begin(), staged.maps.end());
  for (auto& l : staged.links) new_links.insert(l.name);
  for (auto& p : staged.progs) new_progs.insert(p);
  // Non-link attachments go through the old program's pin, which the
  // programs' renames below replace: undo them first.
  if (old)
    for (auto& a : old->map_attachments)
      if ((!new_progs.count(a.prog) || exists_nofollow(stg.prog(a.prog))) &&
          !detach_map_attachment(fin, a))
        spdlog::debug("{}: old attachment of {} already gone: {}", name, a.prog,
                      errno_text(errno));
  // Maps and programs first, links next (a staged link replacing an old
  // one of the same name detaches the old one as it lands), record last.
  for (auto& m : staged.maps) move_in(stg.map(m), fin.map(m));
  for (auto& p : staged.progs) move_in(stg.prog(p), fin.prog(p));
  for (auto& l : staged.links) move_in(stg.link(l.name), fin.link(l.name));
  if (old) {
    for (auto& l : old->links)
      if (!new_links.count(l.name)) remove_pin(fin.link(l.name));
    for (auto& p : old->progs)
      if (!new_progs.count(p)) remove_pin(fin.prog(p));
    for (auto& m : old->maps)
      if (!new_maps.count(m)) remove_pin(fin.map(m));
  }
  move_in(stg.state(), fin.state());
  std::vector<std::string> errors;
  if (!remove_owned_dir(stg, errors)) {
    errno = 0;
    fail(errors.empty() ? "cannot remove " + stg.dir : errors.front());
  }
}

void revert_staged(const PinLayout& layout, const std::string& name,
                   std::vector<std::string>& errors) {
  auto fin = layout.instance(name), stg = layout.staging(name);
  auto staged = lookup_state(stg.state());
  if (!staged.ours()) {
    // Made and died before its record was written, or emptied by a commit
    // that died before removing it: empty either way. Anything else in a
    // staging name is not ours (recover_pin_root leaves it alone).
    if (!remove_empty_leftover(stg.dir))
      errors.push_back(stg.dir + " has no bpfmgr state record and is not empty; left alone");
    return;
  }
  auto old = read_state(fin.state());
  if (old) {
    for (auto& l : old->links) {
      Fd link(bpf_obj_get(fin.link(l.name).c_str()));
      Fd prog(bpf_obj_get(fin.prog(l.prog).c_str()));
      if (!link || !prog) continue;
      bpf_link_info info{};
      std::uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(link.get(), &info, &len) != 0) continue;
      if (info.prog_id == prog_id_of_fd(prog.get())) continue;
      if (bpf_link_update(link.get(), prog.get(), nullptr) != 0)
        errors.push_back(name + ": cannot switch link " + l.name +
                         " back to its committed program: " + errno_text(errno));
      else
        spdlog::info("{}: link {} switched back to its committed program", name, l.name);
    }
  }
  if (staged.state)
    for (auto& a : staged.state->map_attachments) detach_map_attachment(stg, a);
  // A plain sockmap attachment (before Linux 6.10) the staged program had
  // taken over, now detached, goes back to the committed program, as a
  // link does: a map left with no program of that type gets it again.
  if (old)
    for (auto& a : old->map_attachments) {
      Fd map(bpf_obj_get(a.map_pin.c_str()));
      Fd prog(bpf_obj_get(fin.prog(a.prog).c_str()));
      std::uint32_t ids[1], count = 1, flags = 0;
      if (!map || !prog ||
          bpf_prog_query(map.get(), bpf_attach_type(a.attach_type), 0, &flags, ids, &count) != 0 ||
          count > 0)
        continue;
      if (bpf_prog_attach(prog.get(), map.get(), bpf_attach_type(a.attach_type), 0) != 0)
        errors.push_back(name + ": cannot attach " + a.prog + " to " + a.map_pin +
                         " again: " + errno_text(errno));
      else
        spdlog::info("{}: {} attached to {} again", name, a.prog, a.map_pin);
    }
  remove_owned_dir(stg, errors);
}

std::string staging_left_alone(const PinLayout& layout, const std::string& name) {
  auto stg = layout.staging(name);
  struct stat st {};
  if (::lstat(stg.dir.c_str(), &st) != 0) return "";
  if (!S_ISDIR(st.st_mode)) return stg.dir + " is not a directory bpfmgr made; left alone";
  if (lookup_state(stg.state()).ours() || is_empty_leftover(stg.dir)) return "";
  return stg.dir + " has no bpfmgr state record and holds entries bpfmgr did not make; "
         "left alone (remove it by hand; until then instance '" + name +
         "' cannot be loaded)";
}

std::vector<std::string> recover_pin_root(const PinLayout& layout,
                                          std::vector<std::string>& errors) {
  std::vector<std::string> done;
  auto journal = read_journal(layout.journal());
  std::vector<std::string> staged, other;
  if (DIR* d = ::opendir(layout.root().c_str())) {
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (auto inst = PinLayout::staged_instance(n)) staged.push_back(*inst);
      else if (n != "." && n != ".." && n != PinLayout::kJournalName) other.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(staged.begin(), staged.end());
  // An instance directory an unpin (or a load dropping the instance) was
  // killed in, between removing the record and the directory: empty.
  for (auto& n : other) {
    auto dir = layout.instance(n);
    struct stat st {};
    if (::lstat(dir.state().c_str(), &st) == 0 || errno != ENOENT) continue;
    if (::lstat(dir.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (remove_empty_leftover(dir.dir))
      done.push_back(n + ": removed the empty directory " + dir.dir +
                     " an interrupted unpin left");
  }
  for (auto& name : staged) {
    // Foreign content under a staging name is reported and skipped: it
    // blocks that one name, never the pin root.
    if (auto why = staging_left_alone(layout, name); !why.empty()) {
      spdlog::warn("{}", why);
      continue;
    }
    auto rec = lookup_state(layout.staging(name).state());
    bool forward = journal &&
                   std::count(journal->committing.begin(), journal->committing.end(), name) &&
                   rec.state && rec.state->complete;
    if (forward) {
      try {
        commit_staged(layout, name, *rec.state, read_state(layout.instance(name).state()));
        done.push_back(name + ": finished a commit interrupted by a crash");
      } catch (const std::exception& e) {
        errors.push_back(e.what());
      }
    } else {
      auto before = errors.size();
      // Named before they go: unpin and load say what they removed.
      auto pins = list_pins(layout.staging(name));
      revert_staged(layout, name, errors);
      if (errors.size() == before)
        done.push_back(rec.ours()
                           ? name + ": reverted a load interrupted before its commit; removed " +
                                 layout.staging(name).dir + " (" + pins.summary() + ")"
                           : name + ": removed the empty staging directory " +
                                 layout.staging(name).dir +
                                 " an interrupted load or commit left");
    }
  }
  if (exists_nofollow(layout.journal()) && errors.empty()) {
    if (::unlink(layout.journal().c_str()) != 0)
      errors.push_back("cannot remove " + layout.journal() + ": " + errno_text(errno));
  }
  for (auto& d : done) spdlog::warn("{}", d);
  return done;
}

}  // namespace bpfmgr
