#include "kernel_features.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>

#include "handles.hpp"
#include "errno_text.hpp"
#include "mounts.hpp"

namespace bpfmgr {

namespace {

constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
constexpr const char* kBtfDir = "/sys/kernel/btf";
// pahole tags the kernel's kfuncs (BTF_ID_FLAGS sets) with this decl tag.
constexpr const char* kKfuncTag = "bpf_kfunc";

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// [a-z0-9_]+: names of program, map and link types.
bool plain_lower_word(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::islower(c) || std::isdigit(c) || c == '_';
  });
}

// A C identifier.
bool identifier(const std::string& s) {
  return !s.empty() && !std::isdigit(static_cast<unsigned char>(s[0])) &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_';
         });
}

// A tracefs event or category name: never a path of its own.
bool event_word(const std::string& s) {
  return !s.empty() && s != "." && s != ".." &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_' || c == '-' || c == '.';
         });
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_tracefs(const std::string& dir) {
  struct statfs fs {};
  return ::statfs(dir.c_str(), &fs) == 0 &&
         static_cast<unsigned long>(fs.f_type) == TRACEFS_MAGIC;
}

// Name of a BTF type (never NULL).
const char* name_of(const btf* b, const btf_type* t) {
  const char* n = btf__name_by_offset(b, t->name_off);
  return n ? n : "";
}

}  // namespace

// One BTF (vmlinux, or a module's split on top of it).
struct KernelFeatures::Btf {
  btf* b = nullptr;
  std::string name;  // "vmlinux" or the module's
  bool tagged_kfuncs = false;  // has "bpf_kfunc" decl tags (pahole >= 1.26)
  ~Btf() { btf__free(b); }

  std::uint32_t first_id() const {
    const btf* base = btf__base_btf(b);
    return base ? btf__type_cnt(base) : 1;
  }
  // Ids of this BTF's own types of `kind` named `name`.
  template <class F>
  void each(int kind, const std::string& name, F&& f) const {
    std::uint32_t end = btf__type_cnt(b);
    for (std::uint32_t id = first_id(); id < end; ++id) {
      const btf_type* t = btf__type_by_id(b, id);
      if ((kind < 0 || btf_kind(t) == kind) && name == name_of(b, t))
        if (f(id, t)) return;
    }
  }
};

KernelFeatures& KernelFeatures::running() {
  static KernelFeatures k;
  return k;
}

KernelFeatures::KernelFeatures() {
  struct utsname u {};
  release_ = ::uname(&u) == 0 ? u.release : "unknown";
}

KernelFeatures::~KernelFeatures() = default;

bool KernelFeatures::has(Feature kind, const std::string& name) {
  return has(static_cast<std::uint32_t>(kind), name);
}

bool KernelFeatures::has(std::uint32_t kind, const std::string& name) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(kind, name);
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  auto start = std::chrono::steady_clock::now();
  bool answer = false;
  try {
    answer = compute(kind, name);
  } catch (const std::exception& e) {
    spdlog::warn("kernel feature {} '{}': {}", feature_kind_name(kind), name, e.what());
  }
  probe_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::debug("kernel feature {} '{}': {}", feature_kind_name(kind), name,
                answer ? "present" : "absent");
  cache_.emplace(std::move(key), answer);
  return answer;
}

bool KernelFeatures::can_probe() {
  std::lock_guard lock(mu_);
  if (can_probe_ < 0) {
    // The smallest thing a probe makes: an array map.
    Fd fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, 4, 4, 1, nullptr));
    can_probe_ = fd || (errno != EPERM && errno != EACCES);
  }
  return can_probe_ == 1;
}

bool KernelFeatures::compute(std::uint32_t kind, const std::string& name) {
  switch (kind) {
    case BPFMGR_FEATURE_PROG_TYPE: return prog_type(name);
    case BPFMGR_FEATURE_MAP_TYPE: return map_type(name);
    case BPFMGR_FEATURE_HELPER: return helper(name);
    case BPFMGR_FEATURE_KFUNC: return kfunc(name);
    case BPFMGR_FEATURE_BTF_TYPE: return type_exists(name);
    case BPFMGR_FEATURE_BTF_FIELD: return field_exists(name);
    case BPFMGR_FEATURE_BTF_ENUM_VALUE: return enum_value(name);
    case BPFMGR_FEATURE_TRACEPOINT: return tracepoint(name);
    case BPFMGR_FEATURE_LINK_TYPE: return link_type(name);
  }
  return false;
}

// ------------------------------------------------------------------- BTF

KernelFeatures::Btf* KernelFeatures::vmlinux() {
  if (vmlinux_tried_) return vmlinux_.get();
  vmlinux_tried_ = true;
  auto out = std::make_unique<Btf>();
  out->name = "vmlinux";
  // Linux 6.16+ lets the file be mapped: no 5 MB copy through read(2).
  Fd fd(::open(kVmlinuxBtf, O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fd && ::fstat(fd.get(), &st) == 0 && st.st_size > 0) {
    void* p = ::mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p != MAP_FAILED) {
      out->b = btf__new(p, st.st_size);  // copies what it keeps
      ::munmap(p, st.st_size);
      if (libbpf_get_error(out->b)) out->b = nullptr;
    }
  }
  if (!out->b) {
    out->b = btf__parse(kVmlinuxBtf, nullptr);
    if (libbpf_get_error(out->b)) {
      spdlog::warn("cannot read the kernel's BTF ({}): {}; kernel types, fields, "
                   "kfuncs and link types read as absent",
                   kVmlinuxBtf, errno_text(errno));
      out->b = nullptr;
      return nullptr;
    }
  }
  out->each(BTF_KIND_DECL_TAG, kKfuncTag, [&](std::uint32_t, const btf_type*) {
    return out->tagged_kfuncs = true;
  });
  vmlinux_ = std::move(out);
  return vmlinux_.get();
}

const std::vector<std::unique_ptr<KernelFeatures::Btf>>& KernelFeatures::modules() {
  if (modules_tried_) return modules_;
  modules_tried_ = true;
  Btf* base = vmlinux();
  if (!base) return modules_;
  DIR* d = ::opendir(kBtfDir);
  if (!d) return modules_;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n == "vmlinux") continue;
    auto m = std::make_unique<Btf>();
    m->name = n;
    m->b = btf__parse_split((std::string(kBtfDir) + "/" + n).c_str(), base->b);
    if (libbpf_get_error(m->b)) {
      m->b = nullptr;
      continue;
    }
    m->each(BTF_KIND_DECL_TAG, kKfuncTag, [&](std::uint32_t, const btf_type*) {
      return m->tagged_kfuncs = true;
    });
    modules_.push_back(std::move(m));
  }
  ::closedir(d);
  return modules_;
}

std::optional<std::int64_t> KernelFeatures::enumerator(const std::string& enum_name,
                                                       const std::string& value_name) {
  Btf* v = vmlinux();
  if (!v) return std::nullopt;
  std::optional<std::int64_t> found;
  for (int kind : {int(BTF_KIND_ENUM), int(BTF_KIND_ENUM64)}) {
    v->each(kind, enum_name, [&](std::uint32_t, const btf_type* t) {
      for (std::uint16_t i = 0; i < btf_vlen(t); ++i) {
        if (kind == BTF_KIND_ENUM) {
          const struct btf_enum& e = btf_enum(t)[i];
          if (value_name == btf__name_by_offset(v->b, e.name_off))
            found = static_cast<std::int64_t>(e.val);
        } else {
          const struct btf_enum64& e = btf_enum64(t)[i];
          if (value_name == btf__name_by_offset(v->b, e.name_off))
            found = static_cast<std::int64_t>(btf_enum64_value(&e));
        }
        if (found) return true;
      }
      return false;
    });
    if (found) break;
  }
  return found;
}

bool KernelFeatures::kfunc(const std::string& name) {
  if (!identifier(name)) return false;
  auto in = [&](const Btf& b) {
    bool found = false;
    b.each(BTF_KIND_FUNC, name, [&](std::uint32_t func_id, const btf_type*) {
      if (!b.tagged_kfuncs) return found = true;
      // Where the kernel tags its kfuncs, an untagged function is only a
      // kernel function, not callable from BPF.
      std::uint32_t end = btf__type_cnt(b.b);
      for (std::uint32_t id = b.first_id(); id < end && !found; ++id) {
        const btf_type* t = btf__type_by_id(b.b, id);
        if (btf_kind(t) == BTF_KIND_DECL_TAG && t->type == func_id &&
            std::strcmp(name_of(b.b, t), kKfuncTag) == 0)
          found = true;
      }
      return found;
    });
    return found;
  };
  Btf* v = vmlinux();
  if (!v) return false;
  if (in(*v)) return true;
  for (auto& m : modules())
    if (in(*m)) return true;
  return false;
}

namespace {
// "struct tcp_sock" -> (STRUCT, "tcp_sock"); a bare name: any kind (-1).
std::pair<std::vector<int>, std::string> split_type(const std::string& s) {
  struct Prefix {
    const char* word;
    std::vector<int> kinds;
  };
  static const Prefix prefixes[] = {
      {"struct ", {BTF_KIND_STRUCT}},
      {"union ", {BTF_KIND_UNION}},
      {"enum ", {BTF_KIND_ENUM, BTF_KIND_ENUM64}},
      {"typedef ", {BTF_KIND_TYPEDEF}},
  };
  for (auto& p : prefixes)
    if (s.rfind(p.word, 0) == 0) return {p.kinds, s.substr(std::strlen(p.word))};
  return {{-1}, s};
}

// Skips typedefs and qualifiers.
const btf_type* resolved(const btf* b, std::uint32_t id) {
  const btf_type* t = btf__type_by_id(b, id);
  while (t && (btf_is_typedef(t) || btf_is_mod(t) || btf_kind(t) == BTF_KIND_TYPE_TAG))
    t = btf__type_by_id(b, t->type);
  return t;
}

// The type id of member `name` of composite `t`, looking through anonymous
// struct and union members (C11), or 0.
std::uint32_t member_type(const btf* b, const btf_type* t, const std::string& name,
                          int depth = 0) {
  if (!t || !btf_is_composite(t) || depth > 32) return 0;
  const btf_member* m = btf_members(t);
  for (std::uint16_t i = 0; i < btf_vlen(t); ++i) {
    const char* n = btf__name_by_offset(b, m[i].name_off);
    if (n && *n) {
      if (name == n) return m[i].type;
    } else if (auto id = member_type(b, resolved(b, m[i].type), name, depth + 1)) {
      return id;
    }
  }
  return 0;
}
}  // namespace

bool KernelFeatures::type_exists(const std::string& spec) {
  auto [kinds, name] = split_type(spec);
  if (!identifier(name)) return false;
  Btf* v = vmlinux();
  if (!v) return false;
  bool found = false;
  for (int kind : kinds)
    v->each(kind, name, [&](std::uint32_t, const btf_type* t) {
      // A bare name is a type, not a function or variable of that name.
      int k = btf_kind(t);
      return found = kind >= 0 || !(k == BTF_KIND_FUNC || k == BTF_KIND_VAR ||
                                    k == BTF_KIND_DECL_TAG || k == BTF_KIND_DATASEC);
    });
  return found;
}

bool KernelFeatures::field_exists(const std::string& spec) {
  // "struct tcp_sock.snd_una", "struct sock.__sk_common.skc_family".
  auto dot = spec.find('.');
  if (dot == std::string::npos) return false;
  auto [kinds, name] = split_type(spec.substr(0, dot));
  if (!identifier(name)) return false;
  std::vector<std::string> path;
  for (std::size_t from = dot + 1;;) {
    auto next = spec.find('.', from);
    path.push_back(spec.substr(from, next - from));
    if (!identifier(path.back())) return false;
    if (next == std::string::npos) break;
    from = next + 1;
  }
  Btf* v = vmlinux();
  if (!v) return false;
  bool found = false;
  for (int kind : kinds)
    v->each(kind, name, [&](std::uint32_t, const btf_type* t) {
      if (!btf_is_composite(t)) return false;
      const btf_type* cur = t;
      for (auto& member : path) {
        auto id = member_type(v->b, cur, member);
        if (!id) return false;
        cur = resolved(v->b, id);
      }
      return found = true;
    });
  return found;
}

bool KernelFeatures::enum_value(const std::string& name) {
  if (!identifier(name)) return false;
  Btf* v = vmlinux();
  if (!v) return false;
  std::uint32_t end = btf__type_cnt(v->b);
  for (std::uint32_t id = 1; id < end; ++id) {
    const btf_type* t = btf__type_by_id(v->b, id);
    if (btf_is_enum(t)) {
      for (std::uint16_t i = 0; i < btf_vlen(t); ++i)
        if (name == btf__name_by_offset(v->b, btf_enum(t)[i].name_off)) return true;
    } else if (btf_is_enum64(t)) {
      for (std::uint16_t i = 0; i < btf_vlen(t); ++i)
        if (name == btf__name_by_offset(v->b, btf_enum64(t)[i].name_off)) return true;
    }
  }
  return false;
}

namespace {
// perf_event links asked of the kernel itself, as libbpf does before it
// attaches (its FEAT_PERF_LINK): BPF_LINK_CREATE with BPF_PERF_EVENT and
// no perf event fd fails with EBADF where the kernel has them, EINVAL
// where not. A 2-instruction program load, where reading vmlinux BTF for
// the enumerator costs ~6 ms: every load of a tracepoint plugin asks.
// nullopt when this process may not load a program.
std::optional<bool> probe_perf_event_link() {
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  Fd prog(bpf_prog_load(BPF_PROG_TYPE_TRACEPOINT, nullptr, "GPL", insns, 2, nullptr));
  if (!prog) return std::nullopt;
  Fd link(bpf_link_create(prog.get(), -1, BPF_PERF_EVENT, nullptr));
  return !link && errno == EBADF;
}
}  // namespace

bool KernelFeatures::link_type(const std::string& name) {
  if (!plain_lower_word(name)) return false;
  if (name == "perf_event")
    if (auto has = probe_perf_event_link()) return *has;
  return enumerator("bpf_link_type", "BPF_LINK_TYPE_" + upper(name)).has_value();
}

// ------------------------------------------------------- libbpf's probes

namespace {
// libbpf's name for a value of an enum (libbpf_bpf_*_type_str), or the
// kernel's enumerator for a type libbpf 1.1 predates ("netfilter").
template <class Str>
std::optional<int> type_by_name(const std::string& name, Str str) {
  for (int v = 0; v < 256; ++v) {
    const char* s = str(v);
    if (!s) break;
    if (name == s) return v;
  }
  return std::nullopt;
}
}  // namespace

bool KernelFeatures::prog_type(const std::string& name) {
  if (!plain_lower_word(name)) return false;
  auto t = type_by_name(name, [](int v) {
    return libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(v));
  });
  if (!t)
    if (auto e = enumerator("bpf_prog_type", "BPF_PROG_TYPE_" + upper(name)))
      t = static_cast<int>(*e);
  // libbpf refuses to probe a type it does not know (-EOPNOTSUPP): absent.
  return t && *t != BPF_PROG_TYPE_UNSPEC &&
         libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(*t), nullptr) == 1;
}

bool KernelFeatures::map_type(const std::string& name) {
  if (!plain_lower_word(name)) return false;
  auto t = type_by_name(name, [](int v) {
    return libbpf_bpf_map_type_str(static_cast<bpf_map_type>(v));
  });
  if (!t)
    if (auto e = enumerator("bpf_map_type", "BPF_MAP_TYPE_" + upper(name)))
      t = static_cast<int>(*e);
  return t && *t != BPF_MAP_TYPE_UNSPEC &&
         libbpf_probe_bpf_map_type(static_cast<bpf_map_type>(*t), nullptr) == 1;
}

bool KernelFeatures::helper(const std::string& spec) {
  // "sock_ops:bpf_get_netns_cookie": the helper's id is the kernel's own
  // BPF_FUNC_get_netns_cookie (enum bpf_func_id in its BTF).
  auto colon = spec.find(':');
  if (colon == std::string::npos) return false;
  std::string prog = spec.substr(0, colon), func = spec.substr(colon + 1);
  if (func.rfind("bpf_", 0) == 0) func = func.substr(4);
  if (!plain_lower_word(prog) || !identifier(func)) return false;
  if (!has(BPFMGR_FEATURE_PROG_TYPE, prog)) return false;
  auto t = type_by_name(prog, [](int v) {
    return libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(v));
  });
  if (!t)
    if (auto e = enumerator("bpf_prog_type", "BPF_PROG_TYPE_" + upper(prog)))
      t = static_cast<int>(*e);
  auto id = enumerator("bpf_func_id", "BPF_FUNC_" + func);
  if (!t || !id) return false;
  if (libbpf_probe_bpf_helper(static_cast<bpf_prog_type>(*t),
                              static_cast<bpf_func_id>(*id), nullptr) != 1)
    return false;
  return !helper_refused_by_verifier(*t, *id);
}

// libbpf 1.1's probe knows only the older refusals ("unknown func",
// "invalid func"); since 6.x the verifier also says "program of this type
// cannot use helper", which libbpf 1.1 takes for support (6.12's sock_ops and
// bpf_get_current_comm). So the call is loaded once more and that wording is
// looked for too. Any other failure (argument checks of the bare call) means
// the helper exists for the type, as libbpf reads it.
bool KernelFeatures::helper_refused_by_verifier(int prog_type, long long func_id) {
  const bpf_insn insns[] = {
      {BPF_JMP | BPF_CALL, 0, 0, 0, static_cast<__s32>(func_id)},
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  std::string log(64 * 1024, '\0');
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_level = 1,
              .log_size = static_cast<__u32>(log.size()), .log_buf = log.data());
  int fd = bpf_prog_load(static_cast<bpf_prog_type>(prog_type), "bpfmgr_probe", "GPL",
                         insns, sizeof(insns) / sizeof(insns[0]), &opts);
  if (fd >= 0) {
    close(fd);
    return false;
  }
  return log.find("cannot use helper") != std::string::npos ||
         log.find("unknown func ") != std::string::npos ||
         log.find("invalid func ") != std::string::npos;
}

// ------------------------------------------------------------- tracefs

bool KernelFeatures::tracepoint(const std::string& spec) {
  auto slash = spec.find('/');
  if (slash == std::string::npos) return false;
  std::string category = spec.substr(0, slash), event = spec.substr(slash + 1);
  if (!event_word(category) || !event_word(event)) return false;
  if (!tracefs_tried_) {
    tracefs_tried_ = true;
    auto find = [&] {
      for (const char* dir : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"})
        if (is_tracefs(dir) && is_dir(std::string(dir) + "/events")) {
          tracefs_ = std::string(dir) + "/events";
          return true;
        }
      return false;
    };
    // The same mount load makes: libbpf attaches tracepoints through it.
    if (!find()) {
      ensure_tracefs();
      find();
    }
    if (tracefs_.empty())
      spdlog::warn("tracefs is not mounted and cannot be: tracepoints read as absent");
  }
  return !tracefs_.empty() && is_dir(tracefs_ + "/" + category + "/" + event);
}

// ---------------------------------------------------------- C bridge

KernelBridge::KernelBridge(KernelFeatures& features, KernelRequirements* collect)
    : c_{{&kOps}, this}, features_(features), collect_(collect) {}

KernelBridge& KernelBridge::of(const bpfmgr_kernel* k) {
  return *reinterpret_cast<const C*>(k)->self;
}

namespace {
const char* or_empty(const char* s) { return s ? s : ""; }
}  // namespace

// Nothing thrown here may reach the plugin.
const bpfmgr_kernel_ops KernelBridge::kOps = [] {
  bpfmgr_kernel_ops o{};
  o.size = sizeof(o);
  o.has = [](const bpfmgr_kernel* k, std::uint32_t kind, const char* name) -> int {
    try {
      return name && of(k).features_.has(kind, name) ? 1 : 0;
    } catch (...) {
      return 0;
    }
  };
  o.release = [](const bpfmgr_kernel* k) { return of(k).features_.release().c_str(); };
  o.require = [](bpfmgr_kernel* k, std::uint32_t kind, const char* name, const char* key,
                 const char* since, const char* hint) {
    auto& self = of(k);
    try {
      if (!self.collect_) {
        self.misuse_ = "require() is only allowed in kernel_requirements";
        return;
      }
      KernelNeed n{kind, or_empty(name), or_empty(key), or_empty(since), or_empty(hint),
                   false};
      n.met = known_feature_kind(kind) && !n.name.empty() &&
              self.features_.has(kind, n.name);
      self.collect_->needs.push_back(std::move(n));
    } catch (...) {
    }
  };
  o.degrade = [](bpfmgr_kernel* k, const char* what, const char* because) {
    auto& self = of(k);
    try {
      if (!self.collect_) {
        self.misuse_ = "degrade() is only allowed in kernel_requirements";
        return;
      }
      self.collect_->degraded.push_back({or_empty(what), or_empty(because)});
    } catch (...) {
    }
  };
  return o;
}();

// ------------------------------------------------------------- wording

bool known_feature_kind(std::uint32_t kind) {
  return kind >= BPFMGR_FEATURE_PROG_TYPE && kind <= BPFMGR_FEATURE_LINK_TYPE;
}

std::string feature_kind_name(std::uint32_t kind) {
  switch (kind) {
    case BPFMGR_FEATURE_PROG_TYPE: return "prog_type";
    case BPFMGR_FEATURE_MAP_TYPE: return "map_type";
    case BPFMGR_FEATURE_HELPER: return "helper";
    case BPFMGR_FEATURE_KFUNC: return "kfunc";
    case BPFMGR_FEATURE_BTF_TYPE: return "btf_type";
    case BPFMGR_FEATURE_BTF_FIELD: return "btf_field";
    case BPFMGR_FEATURE_BTF_ENUM_VALUE: return "btf_enum_value";
    case BPFMGR_FEATURE_TRACEPOINT: return "tracepoint";
    case BPFMGR_FEATURE_LINK_TYPE: return "link_type";
  }
  return "kind " + std::to_string(kind);
}

std::string describe_feature(std::uint32_t kind, const std::string& name) {
  switch (kind) {
    case BPFMGR_FEATURE_PROG_TYPE: return "program type " + name;
    case BPFMGR_FEATURE_MAP_TYPE: return "map type " + name;
    case BPFMGR_FEATURE_HELPER: {
      auto colon = name.find(':');
      if (colon == std::string::npos) return "helper " + name;
      return "helper " + name.substr(colon + 1) + " in " + name.substr(0, colon) +
             " programs";
    }
    case BPFMGR_FEATURE_KFUNC: return "kfunc " + name;
    case BPFMGR_FEATURE_BTF_TYPE: return "kernel type " + name;
    case BPFMGR_FEATURE_BTF_FIELD: return "kernel field " + name;
    case BPFMGR_FEATURE_BTF_ENUM_VALUE: {
      auto ends = [&](const std::string& suffix) {
        return name.size() > suffix.size() &&
               name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      if (name.rfind("BPF_SOCK_OPS_", 0) == 0 && ends("_CB")) return "sock_ops callback " + name;
      if (name.rfind("BPF_SOCK_OPS_", 0) == 0 && ends("_FLAG")) return "sock_ops flag " + name;
      return "kernel enumerator " + name;
    }
    case BPFMGR_FEATURE_TRACEPOINT: return "tracepoint " + name;
    case BPFMGR_FEATURE_LINK_TYPE: return "link type " + name;
  }
  return "feature " + name + " of unknown kind " + std::to_string(kind);
}

}  // namespace bpfmgr
