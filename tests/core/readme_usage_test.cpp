// The README's usage block ("## Using it") against the binary's own
// `--help`: every subcommand and every flag in one appears in the other, so
// the README cannot promise a flag bpfmgr lacks or hide one it has.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "test_support.hpp"

namespace bpfmgr::test {
namespace {

using Flags = std::set<std::string>;
// "" holds the global flags (before any subcommand).
using Usage = std::map<std::string, Flags>;

std::string join(const Flags& s) {
  std::string out;
  for (auto& x : s) out += (out.empty() ? "" : " ") + x;
  return out.empty() ? "(none)" : out;
}

// Lines of the first ``` block after "## Using it" that start with
// "bpfmgr ": `bpfmgr SUB ... [--flag X] ...`; a line whose second word is
// not a lowercase command (`bpfmgr [--log-level L] COMMAND`, `bpfmgr
// --version`) holds global flags.
Usage readme_usage() {
  std::ifstream in(source_dir() + "/README.md");
  std::string line;
  bool section = false, block = false;
  Usage usage;
  usage[""];
  std::regex flag("--[a-z][a-z0-9-]*");
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) section = line == "## Using it";
    if (!section) continue;
    if (line.rfind("```", 0) == 0) {
      if (block) break;
      block = true;
      continue;
    }
    if (!block || line.rfind("bpfmgr ", 0) != 0) continue;
    std::istringstream words(line);
    std::string bpfmgr, second;
    words >> bpfmgr >> second;
    std::string sub = std::regex_match(second, std::regex("[a-z]+")) ? second : "";
    auto& flags = usage[sub];
    for (std::sregex_iterator it(line.begin(), line.end(), flag), end; it != end; ++it)
      flags.insert(it->str());
  }
  return usage;
}

// The section of CLI11's help titled `title` ("Options:", "Subcommands:"):
// its entries' first words (flags: "-h,--help" gives "--help").
Flags help_entries(const std::string& help, const std::string& title) {
  Flags out;
  std::istringstream lines(help);
  std::string line;
  bool in = false;
  std::regex entry(title == "Subcommands:" ? "^  ([a-z]+) " : "^  (?:-[a-zA-Z],)?(--[a-z][a-z0-9-]*)");
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != ' ') in = line == title;
    std::smatch m;
    if (in && std::regex_search(line, m, entry)) out.insert(m[1]);
  }
  out.erase("--help");
  return out;
}

Usage help_usage() {
  auto top = bench::run({bpfmgr_binary(), "--help"});
  EXPECT_EQ(top.exit_code, 0) << top.err;
  Usage usage;
  usage[""] = help_entries(top.out, "Options:");
  for (auto& sub : help_entries(top.out, "Subcommands:")) {
    auto r = bench::run({bpfmgr_binary(), sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.err;
    usage[sub] = help_entries(r.out, "Options:");
  }
  return usage;
}

TEST(ReadmeUsage, MatchesTheHelpOfEveryCommand) {
  auto readme = readme_usage();
  auto help = help_usage();
  ASSERT_GE(help.size(), 8u) << "subcommands missing from `bpfmgr --help`";
  ASSERT_GE(readme.size(), 8u) << "no usage block under \"## Using it\" in README.md";
  for (auto& [sub, flags] : help) {
    auto name = sub.empty() ? std::string("global options") : "bpfmgr " + sub;
    ASSERT_TRUE(readme.count(sub)) << name << " is missing from README.md's usage block";
    EXPECT_EQ(readme.at(sub), flags) << name << ": README.md says " << join(readme.at(sub))
                                     << "; --help says " << join(flags);
  }
  for (auto& [sub, flags] : readme)
    EXPECT_TRUE(help.count(sub)) << "README.md documents `bpfmgr " << sub
                                 << "`, which --help does not list";
}

}  // namespace
}  // namespace bpfmgr::test
