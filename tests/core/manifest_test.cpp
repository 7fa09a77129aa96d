// Manifest validation: every problem reported at once, each at the right
// file:line:column, with a hint where one helps. Opens plugins and their BPF
// objects but never loads anything into the kernel.
#include <gtest/gtest.h>

#include <ctime>

#include "manifest.hpp"
#include "record_json.hpp"
#include "object_spec.hpp"
#include "resolve.hpp"
#include "test_support.hpp"

namespace bpfmgr {
namespace {

struct Result {
  bool ok = false;
  Diagnostics diags;
};

Result check(const std::string& text) {
  Result r;
  auto m = parse_manifest_text(text, "m.toml", "/", r.diags);
  if (!m) return r;  // malformed TOML
  m->plugin_path.insert(m->plugin_path.begin(), test::test_plugin_dir());
  PluginRegistry registry(m->plugin_path);
  r.ok = resolve_manifest(std::move(*m), registry, r.diags).has_value();
  return r;
}

// The diagnostic whose message contains `needle`, or a failure.
const Diagnostic& find(const Result& r, const std::string& needle) {
  for (auto& d : r.diags.items())
    if (d.message.find(needle) != std::string::npos) return d;
  ADD_FAILURE() << "no diagnostic contains '" << needle << "'; got:\n"
                << r.diags.format();
  static Diagnostic none;
  return none;
}

TEST(Manifest, ValidManifestResolvesWithDefaults) {
  auto r = check(R"(
[[instance]]
name = "a"
plugin = "testcount"
[instance.options]
tgid = 7
)");
  ASSERT_TRUE(r.ok) << r.diags.format();
}

// The parser hands on options as plain values with their positions (no
// TOML type past it); the plugin's schema types them later, and an element
// of a list is still reported at its own line and column.
TEST(Manifest, OptionsLeaveTheParserAsPlainValuesWithPositions) {
  Diagnostics d;
  auto m = parse_manifest_text(R"([[instance]]
name = "a"
plugin = "testcount"
[instance.options]
tgid = 7
mode = "calls"
ports = [80, "x"]
)",
                               "m.toml", "/", d);
  ASSERT_TRUE(m) << d.format();
  auto& o = m->instances.at(0).options;
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].key, "mode");  // sorted by key
  EXPECT_EQ(o[0].value.kind, RawValue::Kind::String);
  EXPECT_EQ(o[0].value.string, "calls");
  EXPECT_EQ(o[1].key, "ports");
  EXPECT_EQ(o[1].key_pos.line, 7);
  EXPECT_EQ(o[1].key_pos.column, 1);
  ASSERT_EQ(o[1].value.kind, RawValue::Kind::Array);
  ASSERT_EQ(o[1].value.items.size(), 2u);
  EXPECT_EQ(o[1].value.items[0].integer, 80);
  EXPECT_EQ(o[1].value.items[1].kind, RawValue::Kind::String);
  EXPECT_EQ(o[1].value.items[1].pos.line, 7);
  EXPECT_EQ(o[1].value.items[1].pos.column, 14);
  EXPECT_EQ(o[2].key, "tgid");
  EXPECT_EQ(o[2].value.integer, 7);
}

TEST(Manifest, SyntaxErrorHasPosition) {
  auto r = check("[[instance]]\nname = \"a\nplugin = \"x\"\n");
  ASSERT_FALSE(r.ok);
  ASSERT_EQ(r.diags.items().size(), 1u);
  EXPECT_EQ(r.diags.items()[0].pos.file, "m.toml");
  EXPECT_EQ(r.diags.items()[0].pos.line, 2);
  EXPECT_GT(r.diags.items()[0].pos.column, 1);
}

TEST(Manifest, CharactersTomlppMisreadsAreReadAsTomlSays) {
  // toml++ 3.3's whitespace table has undefined behaviour for U+00A1-U+0499
  // and three more ranges (UBSan; tests/fuzz/regressions): the parser never
  // shows them to toml++, and what it reads back is the text as written.
  const std::string instance = "[[instance]]\nname = \"a\"\nplugin = \"testcount\"\n";
  auto parse = [](const std::string& text, Diagnostics& d) {
    return parse_manifest_text(text, "m.toml", "/", d);
  };
  {  // In strings, keys and multi-line strings after a line-ending backslash.
    Diagnostics d;
    auto m = parse("pin_root = \"\"\"\\\n  \u00A0\u3000\u00E9cole \u0416 \uFEFE\"\"\"\n" + instance +
                       "[instance.options]\n\"\u00E9\u0416\" = \"\u3001\u2C5E\"\n",
                   d);
    ASSERT_TRUE(m.has_value()) << d.format();
    EXPECT_EQ(m->pin_root, "\u00E9cole \u0416 \uFEFE");
    ASSERT_EQ(m->instances.size(), 1u);
    ASSERT_EQ(m->instances[0].options.size(), 1u);
    EXPECT_EQ(m->instances[0].options[0].key, "\u00E9\u0416");
    EXPECT_EQ(m->instances[0].options[0].key_pos.line, 7);
    EXPECT_EQ(m->instances[0].options[0].key_pos.column, 1);
  }
  {  // Where TOML allows none: toml++'s own error, at the character, naming it.
    Diagnostics d;
    EXPECT_FALSE(parse(instance + "tgid = 1\u00E9\n", d).has_value());
    ASSERT_EQ(d.items().size(), 1u) << d.format();
    EXPECT_EQ(d.items()[0].pos.line, 4);
    EXPECT_NE(d.items()[0].message.find("\u00E9"), std::string::npos) << d.format();
    EXPECT_EQ(d.items()[0].message.find("\xF4"), std::string::npos) << d.format();
  }
  {  // What stands in for them internally is refused, at its place.
    Diagnostics d;
    EXPECT_FALSE(parse("# \U00100000\n" + instance, d).has_value());
    ASSERT_EQ(d.items().size(), 1u) << d.format();
    EXPECT_EQ(d.items()[0].pos.line, 1);
    EXPECT_EQ(d.items()[0].pos.column, 3);
    EXPECT_NE(d.items()[0].message.find("private-use"), std::string::npos) << d.format();
  }
}

TEST(Manifest, UnknownTopLevelKeySuggestsClosest) {
  auto r = check(R"(pin_rot = "/sys/fs/bpf/x"
[[instance]]
name = "a"
plugin = "testcount"
)");
  ASSERT_FALSE(r.ok);
  auto& d = find(r, "unknown key 'pin_rot'");
  EXPECT_EQ(d.pos.line, 1);
  EXPECT_EQ(d.pos.column, 1);
  EXPECT_EQ(d.hint, "did you mean 'pin_root'?");
}

TEST(Manifest, WrongTypesAndRelativePinRoot) {
  auto r = check(R"(pin_root = "relative/dir"
[[instance]]
name = "a"
plugin = 5
enabled = "yes"
)");
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(find(r, "pin_root must be an absolute path").pos.line, 1);
  auto& plugin = find(r, "plugin must be a string");
  EXPECT_EQ(plugin.pos.line, 4);
  EXPECT_EQ(plugin.pos.column, 10);
  EXPECT_EQ(find(r, "enabled must be true or false").pos.line, 5);
}

TEST(Manifest, DuplicateAndInvalidInstanceNames) {
  auto r = check(R"(
[[instance]]
name = "dup"
plugin = "testcount"

[[instance]]
name = "dup"
plugin = "testcount"

[[instance]]
name = "has.dot"
plugin = "testcount"
)");
  ASSERT_FALSE(r.ok);
  auto& dup = find(r, "duplicate instance name 'dup'");
  EXPECT_EQ(dup.pos.line, 7);
  EXPECT_EQ(dup.hint, "first defined at line 3");
  EXPECT_EQ(find(r, "invalid instance name 'has.dot'").pos.line, 11);
}

TEST(Manifest, MissingPluginSuggestsAvailableOne) {
  auto r = check(R"(
[[instance]]
name = "a"
plugin = "testcont"
)");
  ASSERT_FALSE(r.ok);
  auto& d = find(r, "plugin 'testcont' not found");
  EXPECT_EQ(d.pos.line, 4);
  EXPECT_EQ(d.pos.column, 10);
  EXPECT_EQ(d.hint, "did you mean 'testcount'?");
}

TEST(Manifest, OptionErrorsAreAllReportedWithPositions) {
  auto r = check(R"(
[[instance]]
name = "a"
plugin = "testcount"
[instance.options]
tgd = 1
max_entries = 0
mode = "calss"

[[instance]]
name = "b"
plugin = "testcount"
[instance.options]
tgid = "self"
)");
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.diags.items().size(), 4u) << r.diags.format();
  auto& unknown = find(r, "unknown option 'tgd'");
  EXPECT_EQ(unknown.pos.line, 6);
  EXPECT_EQ(unknown.hint, "did you mean 'tgid'?");
  auto& range = find(r, "0 is out of range");
  EXPECT_EQ(range.pos.line, 7);
  EXPECT_EQ(range.pos.column, 15);
  EXPECT_EQ(range.hint, "must be between 1 and 65536");
  auto& choice = find(r, "'calss' is not allowed");
  EXPECT_EQ(choice.pos.line, 8);
  EXPECT_EQ(choice.hint, "did you mean 'calls'?");
  auto& type = find(r, "option 'tgid' of instance 'b' must be an integer");
  EXPECT_EQ(type.pos.line, 14);
}

TEST(Manifest, PluginValidateProblemPointsAtItsKey) {
  // In the same pass as the schema's errors: validate() sees the options
  // that passed the schema (a refused one at its default).
  auto r = check(R"(
[[instance]]
name = "a"
plugin = "testcount"
[instance.options]
mode = "bytes"
max_entries = 0
)");
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.diags.items().size(), 2u) << r.diags.format();
  auto& d = find(r, "mode 'bytes' needs a tgid");
  EXPECT_EQ(d.pos.line, 6);
  EXPECT_EQ(d.pos.column, 1);
  EXPECT_EQ(d.hint, "set tgid = <pid>");
  auto& range = find(r, "0 is out of range");
  EXPECT_EQ(range.pos.line, 7);
  EXPECT_EQ(range.pos.column, 15);
}

TEST(Manifest, MapsDifferingOnlyInFlagsAreNotTheSameMap) {
  // One rule for shared and kept maps, flags included (BPF_F_NO_PREALLOC).
  MapSpec a{"m", 1, 4, 8, 16, 0};
  auto b = a;
  EXPECT_EQ(map_mismatch(a, b), "");
  b.flags = 1;
  EXPECT_EQ(map_mismatch(a, b), "flags 0x0 vs 0x1");
}

TEST(Manifest, SharedMapsAreChecked) {
  auto r = check(R"(
[[instance]]
name = "owner"
plugin = "testcount"

[[instance]]
name = "user"
plugin = "testcount"
[instance.maps]
stats = "ownr"
)");
  ASSERT_FALSE(r.ok);
  auto& unknown = find(r, "refers to unknown instance 'ownr'");
  EXPECT_EQ(unknown.pos.line, 10);
  EXPECT_EQ(unknown.hint, "did you mean 'owner'?");
  r = check(R"(
[[instance]]
name = "owner"
plugin = "testcount"

[[instance]]
name = "user"
plugin = "testcount"
[instance.maps]
stats = "owner"
nosuch = "owner"
)");
  ASSERT_FALSE(r.ok);
  auto& missing = find(r, "has no map 'nosuch' to share");
  EXPECT_EQ(missing.pos.line, 11);
  EXPECT_EQ(missing.hint, "its maps: stats");
}

// Every incompatible library is refused before anything runs, with the
// file, both versions and what to do.
TEST(Manifest, AbiProblemsNameTheFileAndVersions) {
  auto dir = test::test_plugin_dir();
  std::string m;
  const char* files[] = {"badold", "badnewerminor", "badnewermajor", "badnotable",
                         "badmissingentry", "badsmalltable", "nosym"};
  for (auto* f : files)
    m += std::string("[[instance]]\nname = \"") + f + "\"\nplugin = \"" + dir +
         "/bpfmgr-" + f + ".so\"\n";
  auto r = check(m);
  ASSERT_FALSE(r.ok);
  const std::string ours = "this bpfmgr provides " + to_string(kPluginApiVersion);
  const std::string newer_minor = std::to_string(BPFMGR_PLUGIN_API_MAJOR) + "." +
                                  std::to_string(BPFMGR_PLUGIN_API_MINOR + 5) + ".0";
  auto& old = find(r, "was built for plugin API 1.0.0 but " + ours +
                          " (major versions differ); rebuild the plugin against this SDK");
  EXPECT_NE(old.message.find("bpfmgr-badold.so"), std::string::npos);
  EXPECT_EQ(old.pos.line, 3);
  auto& minor = find(r, "was built for plugin API " + newer_minor + " but " + ours +
                            " (the plugin needs a newer minor version); upgrade bpfmgr");
  EXPECT_NE(minor.message.find("bpfmgr-badnewerminor.so"), std::string::npos);
  auto& major = find(r, "was built for plugin API 99.0.0 but " + ours +
                            " (major versions differ); upgrade bpfmgr");
  EXPECT_NE(major.message.find("bpfmgr-badnewermajor.so"), std::string::npos);
  auto& none = find(r, "bpfmgr_plugin_entry returned no function table");
  EXPECT_NE(none.message.find("bpfmgr-badnotable.so"), std::string::npos);
  auto& missing = find(r, "(plugin API " + to_string(kPluginApiVersion) +
                                ") lacks required entries: get_bpf_object");
  EXPECT_NE(missing.message.find("bpfmgr-badmissingentry.so"), std::string::npos);
  auto& small = find(r, "bytes, plugin API " + to_string(kPluginApiVersion) + " needs at least");
  EXPECT_NE(small.message.find("bpfmgr-badsmalltable.so: its function table is "),
            std::string::npos)
      << small.message;
  auto& sym = find(r, "is not a bpfmgr plugin: it does not export bpfmgr_plugin_entry");
  EXPECT_NE(sym.message.find("bpfmgr-nosym.so"), std::string::npos);
  EXPECT_EQ(sym.pos.line, 21);
}

TEST(Manifest, StructuralAndPluginErrorsAreReportedTogether) {
  auto r = check(R"(pin_rot = "/x"
[[instance]]
name = "a"
plugin = "testcount"
[instance.options]
tgid = -5

[[instance]]
name = "a"
plugin = "testcount"

[[instance]]
name = "b"
plugin = "nosuchplugin"
)");
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.diags.items().size(), 4u) << r.diags.format();
  find(r, "unknown key 'pin_rot'");
  find(r, "-5 is out of range");
  find(r, "duplicate instance name 'a'");
  find(r, "plugin 'nosuchplugin' not found");
}

TEST(Manifest, EmptyManifestNeedsAnInstance) {
  auto r = check("pin_root = \"/sys/fs/bpf/x\"\n");
  ASSERT_FALSE(r.ok);
  find(r, "the manifest has no [[instance]]");
}

TEST(Diagnostics, DidYouMeanOnlySuggestsCloseWords) {
  EXPECT_EQ(did_you_mean("sockpos", {"sockops", "sockmsg", "probes"}),
            "did you mean 'sockops'?");
  EXPECT_EQ(did_you_mean("zzzzzz", {"sockops", "sockmsg"}), "");
}

// A record's load time: the UTC time of day, as strftime would write it
// (the record computes it without tzset()).
TEST(RecordJson, UtcNowTextIsTheCurrentUtcTime) {
  auto text_of = [](std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(buf);
  };
  auto before = std::time(nullptr);
  auto text = utc_now_text();
  auto after = std::time(nullptr);
  EXPECT_TRUE(text == text_of(before) || text == text_of(after)) << text;
}

}  // namespace
}  // namespace bpfmgr
