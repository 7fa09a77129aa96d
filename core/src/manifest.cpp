#include "manifest.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

namespace bpfmgr {
namespace fs = std::filesystem;

namespace {

// toml++ 3.3 (Debian 12) asks is_non_ascii_horizontal_whitespace() of
// characters all over the parser (of a value's characters while it scans
// ahead, before it finds the value malformed; after a backslash in a
// multi-line string; ...), and for 3,019 code points its generated table
// reaches TOML_UNREACHABLE: undefined behaviour, found by scripts/fuzz.sh's
// UBSan. Rather than guess where it asks, toml++ never sees them: each is
// swapped for a stand-in of Unicode's private-use plane 16, which toml++
// answers correctly (not whitespace, as for the original, and no different
// in any other test it makes), and swapped back in every key, string and
// message toml++ returns. Columns count code points, so positions hold.
constexpr char32_t kMisreadRanges[][2] = {
    {0xA1, 0x499}, {0x2C5E, 0x2FFF}, {0x3001, 0x3057}, {0xFB26, 0xFEFE}};
constexpr char32_t kStandInBase = 0x100000;
constexpr char32_t kStandInCount = [] {
  char32_t n = 0;
  for (auto& r : kMisreadRanges) n += r[1] - r[0] + 1;
  return n;
}();
static_assert(kStandInCount == 3019 && kStandInBase + kStandInCount - 1 == 0x100BCA,
              "the comment above and the collision hint name these");

std::optional<char32_t> stand_in(char32_t c) {
  char32_t offset = 0;
  for (auto& r : kMisreadRanges) {
    if (c >= r[0] && c <= r[1]) return kStandInBase + offset + (c - r[0]);
    offset += r[1] - r[0] + 1;
  }
  return std::nullopt;
}

std::optional<char32_t> original_of(char32_t c) {
  if (c < kStandInBase || c >= kStandInBase + kStandInCount) return std::nullopt;
  char32_t offset = c - kStandInBase;
  for (auto& r : kMisreadRanges) {
    if (offset <= r[1] - r[0]) return r[0] + offset;
    offset -= r[1] - r[0] + 1;
  }
  return std::nullopt;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// The code point at text[i] and its length in bytes; nullopt for bytes
// that are not UTF-8 (toml++ stops there with an error of its own).
std::optional<std::pair<char32_t, std::size_t>> utf8_at(std::string_view text, std::size_t i) {
  auto b = static_cast<unsigned char>(text[i]);
  std::size_t extra = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 ? 1 : (b & 0xF0) == 0xE0 ? 2
                    : (b & 0xF8) == 0xF0 ? 3 : 4;
  if (extra == 4 || i + extra >= text.size()) return std::nullopt;
  char32_t c = extra ? b & (0x3F >> extra) : b;
  for (std::size_t k = 1; k <= extra; ++k) {
    auto cont = static_cast<unsigned char>(text[i + k]);
    if ((cont & 0xC0) != 0x80) return std::nullopt;
    c = (c << 6) | (cont & 0x3F);
  }
  return std::pair{c, extra + 1};
}

// Maps each code point of `text` through `f` (nullopt: kept), up to the
// first byte that is not UTF-8; the rest is copied as it is.
template <class F>
std::string map_code_points(std::string_view text, F&& f) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    auto cp = utf8_at(text, i);
    if (!cp) break;
    if (auto to = f(cp->first)) append_utf8(out, *to);
    else out.append(text.substr(i, cp->second));
    i += cp->second;
  }
  out.append(text.substr(i));
  return out;
}

std::string swap_back(std::string_view s) {
  if (s.find('\xF4') == std::string_view::npos) return std::string(s);  // no plane 16
  return map_code_points(s, original_of);
}

// Every key and string of `t` (tables of arrays included) swapped back,
// keeping each key's and node's source position.
void swap_back(toml::table& t);
void swap_back(toml::node& n) {
  if (auto* s = n.as_string()) s->get() = swap_back(s->get());
  if (auto* a = n.as_array())
    for (auto& e : *a) swap_back(e);
  if (auto* sub = n.as_table()) swap_back(*sub);
}
void swap_back(toml::table& t) {
  std::vector<toml::key> renamed;
  for (auto&& [k, v] : t) {
    swap_back(v);
    if (k.str().find('\xF4') != std::string_view::npos) renamed.push_back(k);
  }
  // No clash: the text held no stand-in, so no other key is a swapped-back one.
  for (auto& k : renamed) {
    t.insert(toml::key(swap_back(k.str()), k.source()), std::move(*t.get(k.str())));
    t.erase(k.str());
  }
}

const std::vector<std::string> kTopKeys = {"pin_root", "plugin_path",
                                           "instance"};
const std::vector<std::string> kInstanceKeys = {"name",    "plugin", "sha256",
                                                "enabled", "options", "maps"};

SourcePos pos_of(const toml::node& node, const std::string& file) {
  auto& b = node.source().begin;
  return SourcePos{file, int(b.line), int(b.column)};
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    default: return "date/time";
  }
}

class Checker {
 public:
  Checker(std::string file, Diagnostics& d) : file_(std::move(file)), d_(d) {}

  SourcePos at(const toml::node& n) const { return pos_of(n, file_); }

  void unknown_keys(const toml::table& t, const std::vector<std::string>& known,
                    const std::string& where) {
    for (auto& [k, v] : t) {
      std::string key(k.str());
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      auto hint = did_you_mean(key, known);
      if (hint.empty()) {
        hint = "known keys:";
        for (auto& kk : known) hint += " " + kk;
      }
      d_.error(pos_of_key(k, v), "unknown key '" + shorten(key) + "' in " + where, hint);
    }
  }

  SourcePos pos_of_key(const toml::key& k, const toml::node& v) const {
    if (k.source().begin.line) {
      SourcePos p{file_, int(k.source().begin.line),
                  int(k.source().begin.column)};
      return p;
    }
    return at(v);
  }

  const std::string& file() const { return file_; }
  Diagnostics& diags() { return d_; }

  // An option value, positions kept; typing waits for the plugin's schema.
  RawValue raw(const toml::node& n) const {
    RawValue v;
    v.pos = at(n);
    if (auto b = n.as_boolean()) {
      v.kind = RawValue::Kind::Bool;
      v.boolean = b->get();
    } else if (auto i = n.as_integer()) {
      v.kind = RawValue::Kind::Int;
      v.integer = i->get();
    } else if (auto s = n.as_string()) {
      v.kind = RawValue::Kind::String;
      v.string = s->get();
    } else if (auto a = n.as_array()) {
      v.kind = RawValue::Kind::Array;
      for (auto& e : *a) v.items.push_back(raw(e));
    }
    return v;
  }

  void wrong_type(const toml::node& n, const std::string& what,
                  const std::string& expected) {
    d_.error(at(n), what + " must be " + expected + ", not " + type_name(n));
  }

 private:
  std::string file_;
  Diagnostics& d_;
};

void parse_maps(Checker& c, const toml::table& maps, InstanceSpec& inst) {
  for (auto& [k, v] : maps) {
    MapShareSpec share;
    share.map = std::string(k.str());
    share.pos = c.pos_of_key(k, v);
    share.remote_map = share.map;
    if (auto s = v.as_string()) {
      share.instance = s->get();
    } else if (auto t = v.as_table()) {
      c.unknown_keys(*t, {"instance", "map"},
                     "maps." + share.map + " of instance '" + inst.name + "'");
      if (auto i = (*t)["instance"].as_string())
        share.instance = i->get();
      else
        c.diags().error(c.at(v), "maps." + share.map +
                                     " needs `instance = \"NAME\"` (a string)");
      if (auto m = (*t)["map"].node()) {
        if (auto ms = m->as_string())
          share.remote_map = ms->get();
        else
          c.wrong_type(*m, "maps." + share.map + ".map", "a string");
      }
    } else {
      c.wrong_type(v, "maps." + share.map,
                   "an instance name or { instance = ..., map = ... }");
      continue;
    }
    if (share.instance == inst.name)
      c.diags().error(share.pos, "instance '" + inst.name +
                                     "' cannot share a map with itself");
    inst.maps.push_back(std::move(share));
  }
}

}  // namespace

const InstanceSpec* Manifest::find(const std::string& name) const {
  for (auto& i : instances)
    if (i.name == name) return &i;
  return nullptr;
}

bool valid_instance_name(const std::string& name) {
  // bpffs refuses '.' in names; a leading '_' is reserved for staging dirs.
  if (name.empty() || name.size() > 64 ||
      !std::isalnum(static_cast<unsigned char>(name[0])))
    return false;
  for (char ch : name)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_'))
      return false;
  return true;
}

// pin_root and plugin_path.
void parse_top_level(Checker& c, toml::table& root, const std::string& base_dir,
                     Manifest& m, Diagnostics& diags) {
  if (auto n = root["pin_root"].node()) {
    m.pin_root_pos = c.at(*n);
    if (auto s = n->as_string()) {
      m.pin_root = s->get();
      if (m.pin_root.empty() || m.pin_root[0] != '/')
        diags.error(c.at(*n), "pin_root must be an absolute path",
                    "e.g. pin_root = \"/sys/fs/bpf/bpfmgr\"");
      while (m.pin_root.size() > 1 && m.pin_root.back() == '/')
        m.pin_root.pop_back();
    } else {
      c.wrong_type(*n, "pin_root", "a string");
    }
  }

  if (auto n = root["plugin_path"].node()) {
    if (auto a = n->as_array()) {
      for (auto& e : *a) {
        if (auto s = e.as_string()) {
          fs::path p(s->get());
          m.plugin_path.push_back(
              p.is_absolute() ? p.string() : (fs::path(base_dir) / p).string());
        } else {
          c.wrong_type(e, "plugin_path entries", "strings");
        }
      }
    } else {
      c.wrong_type(*n, "plugin_path", "an array of strings");
    }
  }
}

// One [[instance]] table; `seen` holds the names so far (duplicates).
InstanceSpec parse_instance(Checker& c, toml::table& t,
                            std::map<std::string, SourcePos>& seen, Diagnostics& diags) {
  InstanceSpec inst;
  inst.pos = c.at(t);
  c.unknown_keys(t, kInstanceKeys, "[[instance]]");

  if (auto n = t["name"].node()) {
    if (auto s = n->as_string()) {
      inst.name = s->get();
      if (!valid_instance_name(inst.name))
        diags.error(c.at(*n), "invalid instance name '" + shorten(inst.name) + "'",
                    "use letters, digits, '-' and '_' (bpffs allows no '.'), "
                    "at most 64 characters, starting with a letter or digit");
      else if (auto it = seen.find(inst.name); it != seen.end())
        diags.error(c.at(*n), "duplicate instance name '" + inst.name + "'",
                    "first defined at line " +
                        std::to_string(it->second.line));
      else
        seen[inst.name] = c.at(*n);
    } else {
      c.wrong_type(*n, "name", "a string");
    }
  } else {
    diags.error(inst.pos, "[[instance]] has no name",
                "add name = \"...\", unique in the manifest");
  }

  if (auto n = t["plugin"].node()) {
    inst.plugin_pos = c.at(*n);
    if (auto s = n->as_string()) {
      inst.plugin = s->get();
      if (inst.plugin.empty())
        diags.error(c.at(*n), "plugin of instance '" + inst.name + "' is empty",
                    "a plugin name (see `bpfmgr plugins`) or a path to a .so");
    } else
      c.wrong_type(*n, "plugin", "a string (a plugin name or a .so path)");
  } else {
    diags.error(inst.pos, "instance '" + inst.name + "' has no plugin",
                "add plugin = \"NAME\" (see `bpfmgr plugins`)");
  }

  if (auto n = t["sha256"].node()) {
    auto s = n->as_string();
    if (!s || s->get().size() != 64 ||
        !std::all_of(s->get().begin(), s->get().end(),
                     [](char ch) { return std::isxdigit(static_cast<unsigned char>(ch)); }))
      diags.error(c.at(*n), "sha256 must be 64 hex digits (the plugin file's SHA-256)",
                  "sha256sum /path/to/bpfmgr-NAME.so");
    else
      inst.sha256 = s->get();
  }

  if (auto n = t["enabled"].node()) {
    if (auto b = n->as_boolean())
      inst.enabled = b->get();
    else
      c.wrong_type(*n, "enabled", "true or false");
  }

  inst.options_pos = inst.pos;
  if (auto n = t["options"].node()) {
    if (auto o = n->as_table()) {
      for (auto& [k, v] : *o)
        inst.options.push_back({std::string(k.str()), c.pos_of_key(k, v), c.raw(v)});
      inst.options_pos = c.at(*n);
    } else {
      c.wrong_type(*n, "options", "a table ([instance.options])");
    }
  }

  if (auto n = t["maps"].node()) {
    if (auto mt = n->as_table())
      parse_maps(c, *mt, inst);
    else
      c.wrong_type(*n, "maps", "a table ([instance.maps])");
  }
  return inst;
}

// Shared maps must name instances of this manifest; loaded-elsewhere
// instances would make the load order and rollback ambiguous.
void check_share_targets(const Manifest& m, Diagnostics& diags) {
  for (auto& inst : m.instances)
    for (auto& share : inst.maps) {
      auto* other = m.find(share.instance);
      if (!other) {
        std::vector<std::string> names;
        for (auto& i : m.instances) names.push_back(i.name);
        diags.error(share.pos,
                    "maps." + shorten(share.map) + " refers to unknown instance '" +
                        shorten(share.instance) + "'",
                    did_you_mean(share.instance, names));
      } else if (!other->enabled && inst.enabled) {
        diags.error(share.pos, "maps." + share.map + " refers to instance '" +
                                   share.instance + "', which is disabled");
      }
    }
}

std::optional<Manifest> parse_manifest_text(const std::string& text,
                                            const std::string& display_path,
                                            const std::string& base_dir,
                                            Diagnostics& diags) {
  // A stand-in already in the text could not be told from a swapped
  // character: refused (private-use characters have no place in a manifest).
  std::optional<SourcePos> collision;
  int line = 1, column = 0;
  auto swapped = map_code_points(text, [&](char32_t c) -> std::optional<char32_t> {
    if (c == '\n') ++line, column = 0;
    else ++column;
    if (original_of(c) && !collision) collision = SourcePos{display_path, line, column};
    return stand_in(c);
  });
  if (collision) {
    diags.error(*collision, "private-use character (plane 16) in the manifest",
                "bpfmgr reserves U+100000-U+100BCA; remove it");
    return std::nullopt;
  }
  toml::table root;
  try {
    root = toml::parse(swapped, display_path);
  } catch (const toml::parse_error& e) {
    auto& b = e.source().begin;
    diags.error({display_path, int(b.line), int(b.column)}, swap_back(e.description()));
    return std::nullopt;
  }
  swap_back(root);

  Checker c(display_path, diags);
  Manifest m;
  m.path = display_path;
  m.dir = base_dir;
  m.text = text;
  c.unknown_keys(root, kTopKeys, "the manifest");

  parse_top_level(c, root, base_dir, m, diags);

  auto inst_node = root["instance"].node();
  if (!inst_node) {
    diags.error({display_path, 0, 0}, "the manifest has no [[instance]]",
                "add one: [[instance]] name = \"...\" plugin = \"...\"");
  } else if (!inst_node->is_array_of_tables()) {
    c.wrong_type(*inst_node, "instance",
                 "an array of tables (write [[instance]])");
  } else {
    std::map<std::string, SourcePos> seen;
    for (auto& e : *inst_node->as_array())
      m.instances.push_back(parse_instance(c, *e.as_table(), seen, diags));
  }

  check_share_targets(m, diags);
  // Returned even with errors, so that resolve_manifest() can add the
  // plugin-level problems and the user sees every error at once.
  return m;
}

std::optional<Manifest> parse_manifest_file(const std::string& path,
                                            Diagnostics& diags) {
  // A manifest is a regular file of bounded size: a FIFO must not hang the
  // read (O_NONBLOCK opens it at once, fstat then refuses it) and a link to
  // /dev/zero must not eat memory. Links to regular files are fine.
  auto fail = [&](const std::string& why) {
    diags.error({path, 0, 0}, "cannot read manifest: " + why);
    return std::nullopt;
  };
  int raw = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (raw < 0) return fail(std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{raw};
  struct stat st {};
  if (::fstat(raw, &st) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail("not a regular file (FIFOs, devices and directories are refused)");
  if (std::uint64_t(st.st_size) > kMaxManifestBytes)
    return fail("it is " + std::to_string(st.st_size) + " bytes; manifests are limited to " +
                std::to_string(kMaxManifestBytes) + " bytes");
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(raw, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::strerror(errno));
    if (n == 0) break;
    text.append(buf, size_t(n));
    // The file may grow after fstat.
    if (text.size() > kMaxManifestBytes)
      return fail("it grew past the limit of " + std::to_string(kMaxManifestBytes) +
                  " bytes while being read");
  }
  auto absolute = fs::absolute(path).lexically_normal();
  auto m = parse_manifest_text(text, path, absolute.parent_path().string(), diags);
  if (m) m->absolute_path = absolute.string();
  return m;
}

}  // namespace bpfmgr
