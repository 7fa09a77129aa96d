#include "commit.hpp"

#include <bpf/bpf.h>
#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include <bpfmgr/plugin.hpp>

#include "handles.hpp"
#include "pin_tree.hpp"
#include "errno_text.hpp"

namespace bpfmgr {

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
  if (auto old = read_state(fin.state())) {
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
