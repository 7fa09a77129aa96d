#include "plugin_deps.hpp"

#include <fcntl.h>
#include <gelf.h>
#include <glob.h>
#include <link.h>
#include <libelf.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

#include "plugin_trust.hpp"

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

struct DynamicSection {
  std::vector<std::string> needed, rpath, runpath;
  std::uint16_t machine = 0;
};

std::vector<std::string> split_path_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty()) out.push_back(d);
  return out;
}

DynamicSection read_dynamic(int fd, const std::string& path) {
  static std::once_flag once;
  std::call_once(once, [] { elf_version(EV_CURRENT); });
  Elf* e = elf_begin(fd, ELF_C_READ_MMAP, nullptr);
  if (!e || elf_kind(e) != ELF_K_ELF) {
    if (e) elf_end(e);
    throw PluginLoadError(path + " is not an ELF shared library" +
                          (elf_errno() ? std::string(" (") + elf_errmsg(-1) + ")" : ""));
  }
  DynamicSection out;
  GElf_Ehdr eh;
  if (gelf_getehdr(e, &eh)) out.machine = eh.e_machine;
  for (Elf_Scn* scn = nullptr; (scn = elf_nextscn(e, scn));) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_DYNAMIC || sh.sh_entsize == 0) continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data) continue;
    for (std::size_t i = 0; i < sh.sh_size / sh.sh_entsize; ++i) {
      GElf_Dyn dyn;
      if (!gelf_getdyn(data, int(i), &dyn)) break;
      if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_RPATH && dyn.d_tag != DT_RUNPATH)
        continue;
      const char* s = elf_strptr(e, sh.sh_link, dyn.d_un.d_val);
      if (!s) continue;
      if (dyn.d_tag == DT_NEEDED) out.needed.emplace_back(s);
      else
        for (auto& d : split_path_list(s))
          (dyn.d_tag == DT_RPATH ? out.rpath : out.runpath).push_back(d);
    }
  }
  elf_end(e);
  return out;
}

std::string multiarch_triplet(std::uint16_t machine) {
  switch (machine) {
    case EM_X86_64: return "x86_64-linux-gnu";
    case EM_AARCH64: return "aarch64-linux-gnu";
    case EM_386: return "i386-linux-gnu";
  }
  return "";
}

// Every expansion the loader could give a search-path entry: $ORIGIN is
// the object's directory, $PLATFORM the auxv platform, $LIB any of the
// library directory names glibc builds use.
std::vector<std::string> expand(const std::string& entry, const std::string& origin,
                                 std::uint16_t machine) {
  std::vector<std::string> out{entry};
  auto replace_all = [](std::string s, const std::string& from, const std::string& to) {
    for (std::size_t pos; (pos = s.find(from)) != std::string::npos;)
      s.replace(pos, from.size(), to);
    return s;
  };
  const char* platform = reinterpret_cast<const char*>(getauxval(AT_PLATFORM));
  std::vector<std::string> libs{"lib", "lib64"};
  if (auto t = multiarch_triplet(machine); !t.empty()) libs.push_back("lib/" + t);
  std::vector<std::string> next;
  for (auto& s : out) {
    auto a = replace_all(replace_all(s, "${ORIGIN}", origin), "$ORIGIN", origin);
    a = replace_all(replace_all(a, "${PLATFORM}", platform ? platform : ""), "$PLATFORM",
                    platform ? platform : "");
    if (a.find("$LIB") == std::string::npos && a.find("${LIB}") == std::string::npos) {
      next.push_back(a);
      continue;
    }
    for (auto& l : libs) next.push_back(replace_all(replace_all(a, "${LIB}", l), "$LIB", l));
  }
  return next;
}

bool uses_origin(const std::string& entry) {
  return entry.find("$ORIGIN") != std::string::npos ||
         entry.find("${ORIGIN}") != std::string::npos;
}

// The directories /etc/ld.so.conf (and what it includes) lists: what
// ldconfig put in /etc/ld.so.cache.
void read_ld_so_conf(const std::string& file, std::vector<std::string>& dirs, int depth) {
  if (depth > 8) return;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::stringstream ss(line);
    std::string word;
    if (!(ss >> word)) continue;
    if (word == "include") {
      for (std::string pattern; ss >> pattern;) {
        if (pattern[0] != '/') pattern = fs::path(file).parent_path().string() + "/" + pattern;
        glob_t g{};
        if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
          for (std::size_t i = 0; i < g.gl_pathc; ++i)
            read_ld_so_conf(g.gl_pathv[i], dirs, depth + 1);
        ::globfree(&g);
      }
      continue;
    }
    if (word[0] == '/') dirs.push_back(word);
  }
}

// The libraries this process started with, by the name each was loaded
// under. The dynamic loader names a library it found by searching
// "<directory>/<name>", and before searching for a DT_NEEDED name it
// matches the name against the libraries already loaded: a dependency on
// one of these maps no new file and runs no new code, whatever the plugin's
// RPATH or RUNPATH say. Taken before main() runs, so that nothing loaded
// later by path (a plugin is mapped from /proc/self/fd/N) counts.
std::set<std::string> startup_library_names() {
  std::set<std::string> names;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) {
        std::string_view path = info->dlpi_name ? info->dlpi_name : "";
        if (auto slash = path.rfind('/'); slash != std::string_view::npos)
          static_cast<std::set<std::string>*>(out)->emplace(path.substr(slash + 1));
        return 0;
      },
      &names);
  return names;
}
const std::set<std::string> g_startup_libraries = startup_library_names();

// A search directory, opened once per closure: each library is then
// looked up and opened through it (open_trusted_file_at).
struct SearchDir {
  Fd fd;                  // empty: the directory does not exist
  std::string canonical;  // realpath, for the found library's path
};

struct Closure {
  std::string plugin;  // canonical path, for messages
  std::set<std::pair<dev_t, ino_t>> seen;
  std::map<std::string, SearchDir> search_dirs;
  std::optional<std::vector<std::string>> ld_so_conf;  // read once per closure

  const std::vector<std::string>& conf_dirs() {
    if (!ld_so_conf) read_ld_so_conf("/etc/ld.so.conf", ld_so_conf.emplace(), 0);
    return *ld_so_conf;
  }

  // `dir`, judged once per closure (every directory on its path, link
  // targets included), then opened by its real path: nothing on that path
  // can change but by root. `needed` and `by` word the refusal.
  const SearchDir& search_dir(const std::string& dir, const std::string& needed,
                              const std::string& by) {
    if (auto it = search_dirs.find(dir); it != search_dirs.end()) return it->second;
    if (auto why = directory_distrust(dir); !why.empty())
      throw PluginTrustError("refusing to load plugin " + plugin + ": the dynamic loader "
                             "would search " + dir + " for " + needed + " (needed by " + by +
                             ") and " + why + "; bpfmgr runs only code that root alone "
                             "can change (see docs/safety.md)");
    auto& sd = search_dirs[dir];
    std::unique_ptr<char, decltype(&std::free)> real(::realpath(dir.c_str(), nullptr),
                                                    &std::free);
    if (!real) return sd;
    sd.fd.reset(::open(real.get(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    sd.canonical = real.get();
    return sd;
  }

  void walk(int fd, const std::string& path, const std::string& origin, bool is_plugin,
            const std::vector<std::string>& inherited_rpath) {
    auto dyn = read_dynamic(fd, path);
    std::erase_if(dyn.needed, [](const std::string& n) { return g_startup_libraries.count(n); });
    if (dyn.needed.empty()) return;
    std::vector<std::string> rpath, runpath, origin_only;
    auto add = [&](const std::vector<std::string>& entries, std::vector<std::string>& to) {
      for (auto& e : entries) {
        // The plugin itself is mapped from /proc/self/fd/N: its $ORIGIN
        // names that, not its directory, so the loader never looks there.
        if (is_plugin && uses_origin(e)) {
          for (auto& d : expand(e, origin, dyn.machine)) origin_only.push_back(d);
          continue;
        }
        for (auto& d : expand(e, origin, dyn.machine)) to.push_back(d);
      }
    };
    // DT_RPATH counts only when the object has no DT_RUNPATH (ld.so(8)).
    if (dyn.runpath.empty()) {
      add(dyn.rpath, rpath);  // its own first, then its loaders'
      rpath.insert(rpath.end(), inherited_rpath.begin(), inherited_rpath.end());
    }
    add(dyn.runpath, runpath);
    std::vector<std::string> search = rpath;
    if (::geteuid() != 0)
      if (const char* env = std::getenv("LD_LIBRARY_PATH"))
        for (auto& d : split_path_list(env)) search.push_back(d);
    search.insert(search.end(), runpath.begin(), runpath.end());
    search.insert(search.end(), conf_dirs().begin(), conf_dirs().end());
    if (auto t = multiarch_triplet(dyn.machine); !t.empty())
      for (auto* base : {"/lib/", "/usr/lib/"}) search.push_back(base + t);
    for (auto* d : {"/lib64", "/usr/lib64", "/lib", "/usr/lib"}) search.push_back(d);

    const std::string action = "load plugin " + plugin + ", whose dependency is";
    for (auto& needed : dyn.needed) {
      std::optional<TrustedFile> dep;
      if (needed.find('/') != std::string::npos) {
        if (needed[0] != '/')
          throw PluginTrustError("refusing to load plugin " + plugin + ": " + path +
                                 " needs '" + needed + "', a path relative to the current "
                                 "directory");
        dep = open_trusted_file(needed, action);
      } else {
        for (auto& dir : search) {
          if (dir.empty() || dir[0] != '/') continue;  // the loader's cwd: never trusted
          auto& sd = search_dir(dir, needed, path);
          struct stat st {};
          if (sd.fd && ::fstatat(sd.fd.get(), needed.c_str(), &st, 0) == 0 &&
              S_ISREG(st.st_mode)) {
            dep = open_trusted_file_at(sd.fd.get(), sd.canonical, needed, action);
            break;
          }
        }
      }
      if (!dep) {
        for (auto& dir : origin_only) {
          struct stat st {};
          if (::stat((dir + "/" + needed).c_str(), &st) == 0)
            throw PluginLoadError(
                "plugin " + plugin + " needs " + needed + ", found only in " + dir +
                " through $ORIGIN; bpfmgr loads a plugin from a sealed copy of its file, "
                "where $ORIGIN does not name the plugin's directory: link it with an "
                "absolute RUNPATH (-Wl,-rpath,/path) or install " + needed +
                " in a system library directory");
        }
        std::string where;
        for (auto& d : search) where += (where.empty() ? "" : ", ") + d;
        throw PluginLoadError("plugin " + plugin + " needs " + needed + " (a dependency of " +
                              path + "), which is not found; searched: " + where);
      }
      if (!seen.insert({dep->id.dev, dep->id.ino}).second) continue;
      walk(dep->fd.get(), dep->path, fs::path(dep->path).parent_path().string(), false, rpath);
    }
  }
};

}  // namespace

void check_dependency_closure(int fd, const std::string& path) {
  Closure c;
  c.plugin = path;
  c.walk(fd, path, fs::path(path).parent_path().string(), true, {});
}

}  // namespace bpfmgr
