// bpfmgr: load BPF plugins from a manifest, pin them, inspect and remove them.
#include <CLI/CLI.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include <bpfmgr/plugin.hpp>

#include "commands.hpp"
#include "manifest.hpp"
#include "serve.hpp"
#include "verifier_log.hpp"

using namespace bpfmgr;

namespace {

// %* in a pattern: the message as the inside of a JSON string.
class JsonMessageFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static const char* hex = "0123456789abcdef";
    for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
      auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(ch);
      } else if (c == '\n') {
        dest.append(std::string_view("\\n"));
      } else if (c < 0x20) {
        const char esc[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        dest.append(esc, esc + 6);
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

// text: "LEVEL: message", with an RFC 3339 UTC timestamp first for serve (a
// daemon's log is read later); json: one object per line, always stamped.
void configure_log_format(spdlog::logger& logger, const std::string& format, bool serving) {
  if (format == "json") {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<JsonMessageFlag>('*').set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%*"})");
    logger.set_formatter(std::move(f));
  } else if (serving) {
    logger.set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%l%$: %v", spdlog::pattern_time_type::utc);
  } else {
    logger.set_pattern("%^%l%$: %v");
  }
}

// Every command's arguments, filled by the parser.
struct Cli {
  std::string log_level, log_format;
  std::string pin_root = kDefaultPinRoot;  // unpin, status, events
  LoadArgs load;
  std::string verifier_log;
  std::string validate_manifest;
  bool validate_json = false;
  UnpinArgs unpin;
  std::vector<std::string> status_instances;
  bool status_json = false;
  bool status_check = false;
  std::vector<std::string> plugin_dirs;
  bool plugins_json = false;
  EventsArgs events;
  ServeArgs serve;
  std::string bench_plugin;
  std::vector<std::string> bench_args;
};

struct Commands {
  CLI::App* load;
  CLI::App* validate;
  CLI::App* unpin;
  CLI::App* status;
  CLI::App* plugins;
  CLI::App* events;
  CLI::App* serve;
  CLI::App* bench;
};

void add_global_options(CLI::App& app, Cli& cli) {
  app.name("bpfmgr");
  app.set_version_flag("--version", std::string("bpfmgr ") + BPFMGR_VERSION);
  app.require_subcommand(1);
  // Global options (--log-level) are accepted after the subcommand too.
  app.fallthrough();
  app.footer(
      "Exit codes: 0 ok, 1 operation failed (the message says what is left),\n"
      "2 invalid input, 3 status --check found a problem,\n"
      "130/143 load interrupted by SIGINT/SIGTERM (rolled back).\n"
      "Environment: BPFMGR_LOG_LEVEL (trace|debug|info|warn|error|off),\n"
      "BPFMGR_PLUGIN_PATH (colon-separated plugin directories).\n"
      "Run `bpfmgr COMMAND --help` for a command's options.");

  app.add_option("--log-level", cli.log_level,
                 "trace, debug, info, warn (default; info for serve), error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--log-format", cli.log_format,
                 "text (`LEVEL: message`; serve prefixes a UTC timestamp) or json "
                 "(one {\"ts\",\"level\",\"msg\"} object per line)")
      ->check(CLI::IsMember({"text", "json"}));
}

void add_pin_root(CLI::App* c, Cli& cli) {
  c->add_option("--pin-root", cli.pin_root, "bpffs directory holding the instances")
      ->capture_default_str();
}

// Each subcommand's options. A parser gets them only when its name is on
// the command line: building all eight took 0.07 ms of every start (a
// no-op reload is 2.2 ms).
void load_options(CLI::App* c, Cli& cli) {
  c->add_option("manifest", cli.load.manifest, "TOML manifest")->required()
      ->check(CLI::ExistingFile);
  c->add_flag("--dry-run", cli.load.dry_run,
              "run every program through the verifier; pin and attach nothing");
  c->add_flag("--reset-maps", cli.load.reset_maps,
              "recreate maps of updated instances instead of keeping their contents");
  c->add_option("--pin-root", cli.load.pin_root_override, "override the manifest's pin_root");
  c->add_flag("--no-wait", cli.load.no_wait,
              "fail at once (exit 1, naming its PID) when another bpfmgr is "
              "changing the same pin root, instead of waiting for it");
  c->add_flag("--json", cli.load.json, "machine-readable result");
  c->add_option("--verifier-log", cli.verifier_log,
                "write the whole verifier log of every rejected program to FILE "
                "(messages show its reason, instruction, source line and tail)");
}

void validate_options(CLI::App* c, Cli& cli) {
  c->add_option("manifest", cli.validate_manifest, "TOML manifest")->required()
      ->check(CLI::ExistingFile);
  c->add_flag("--json", cli.validate_json, "machine-readable result");
}

void unpin_options(CLI::App* c, Cli& cli) {
  c->add_option("instances", cli.unpin.instances, "instance names");
  add_pin_root(c, cli);
  c->add_flag("--quiet", cli.unpin.quiet, "print nothing on success");
  c->add_flag("--no-wait", cli.unpin.no_wait,
              "fail at once when another bpfmgr is changing the pin root");
  c->add_flag("--json", cli.unpin.json, "machine-readable result");
}

void status_options(CLI::App* c, Cli& cli) {
  c->add_option("instances", cli.status_instances, "instance names (default: all)");
  add_pin_root(c, cli);
  c->add_flag("--json", cli.status_json, "machine-readable output");
  c->add_flag("--check", cli.status_check,
              "exit 3 when an instance is not as loaded (drift, an unfinished "
              "load), a load was interrupted or serve is degraded");
}

void plugins_options(CLI::App* c, Cli& cli) {
  c->add_option("--path", cli.plugin_dirs, "extra directories to search first");
  c->add_flag("--json", cli.plugins_json, "machine-readable output");
}

void events_options(CLI::App* c, Cli& cli) {
  c->add_option("instance", cli.events.instance, "instance name")->required();
  add_pin_root(c, cli);
  c->add_flag("--json", cli.events.json, "JSON lines instead of a table");
  c->add_option("--count", cli.events.count, "stop after N events");
  c->add_option("--duration", cli.events.duration_s, "stop after SECONDS");
}

void serve_options(CLI::App* c, Cli& cli) {
  c->add_option("manifest", cli.serve.manifest, "TOML manifest")->required()
      ->check(CLI::ExistingFile);
  c->add_option("--metrics-address", cli.serve.metrics_address,
                "HOST:PORT for /metrics and /healthz, or `none`")
      ->capture_default_str();
  c->add_option("--interval", cli.serve.interval_s,
                "seconds between full drift checks, 1 to 86400 (removed pins "
                "are seen at once through inotify; this pass is the safety net)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            double d = 0;
            try {
              std::size_t used = 0;
              d = std::stod(v, &used);
              if (used != v.size()) return "--interval: '" + v + "' is not a number";
            } catch (const std::exception&) {
              return "--interval: '" + v + "' is not a number";
            }
            auto why = interval_problem(d);
            return why ? "--interval " + v + ": " + *why : "";
          },
          "SECONDS in [1, 86400]"));
  c->add_flag("--unpin-on-exit", cli.serve.unpin_on_exit,
              "on SIGTERM/SIGINT remove the manifest's instances "
              "(default: they keep running)");
  c->add_flag("--enable-bpf-stats", cli.serve.enable_bpf_stats,
              "turn on per-program run counts and times "
              "(BPF_ENABLE_STATS) while serve runs");
  c->add_option("--pin-root", cli.serve.pin_root_override, "override the manifest's pin_root");
  c->footer(
      "Signals: SIGHUP re-reads the manifest; SIGTERM/SIGINT finish the step in\n"
      "progress and exit 0 (pins stay unless --unpin-on-exit).\n"
      "A second serve on the same pin root exits 1 naming the first one's PID.\n"
      "An invalid manifest is logged (file:line:column), counted in\n"
      "bpfmgr_manifest_errors_total, and what runs is kept.");
}

void bench_options(CLI::App* c, Cli& cli) {
  c->add_option("plugin", cli.bench_plugin, "plugin name")->required();
  // Everything after the plugin's name is the plugin's own arguments.
  c->fallthrough(false);  // unknown options are the harness's, not ours
  c->prefix_command();
  c->footer("Arguments after PLUGIN go to the harness (Google Benchmark), e.g.\n"
            "  bpfmgr bench sockops --benchmark_repetitions=5\n"
            "The harness is looked up next to bpfmgr, then in ../libexec/bpfmgr\n"
            "(where bpfmgr_add_bench() installs it); like a plugin, it must be a file\n"
            "only root can change (docs/safety.md), and is refused otherwise.");
}

struct Subcommand {
  const char* name;
  const char* about;
  CLI::App* Commands::*slot;
  void (*options)(CLI::App*, Cli&);
};
constexpr Subcommand kSubcommands[] = {
    {"load",
     "Validate a manifest, then load, pin and attach its instances "
     "(all or nothing; unchanged instances are left alone)",
     &Commands::load, load_options},
    {"validate", "Check a manifest against the plugins' schemas; touches nothing",
     &Commands::validate, validate_options},
    {"unpin", "Detach and remove instances (all when none is named)", &Commands::unpin,
     unpin_options},
    {"status", "Programs, maps, links, hooks and counters of loaded instances",
     &Commands::status, status_options},
    {"plugins", "List plugins on the search path with versions and options",
     &Commands::plugins, plugins_options},
    {"events", "Stream the ring-buffer events of a loaded instance (Ctrl-C stops)",
     &Commands::events, events_options},
    {"serve",
     "Keep the kernel matching a manifest: load it, then repair drift "
     "and apply changes (file change, SIGHUP, every --interval); "
     "Prometheus metrics on /metrics",
     &Commands::serve, serve_options},
    {"bench",
     "Run a plugin's benchmark harness (bench_PLUGIN: bench/PLUGIN in tree, "
     "bpfmgr_add_bench() out of tree)",
     &Commands::bench, bench_options},
};

// Every subcommand, with the options of those named in `args` (a name that
// is only an option's value costs a parser that goes unused, nothing more).
void add_subcommands(CLI::App& app, Cli& cli, Commands& c,
                     const std::vector<std::string>& args) {
  for (auto& s : kSubcommands) {
    auto* sub = c.*s.slot = app.add_subcommand(s.name, s.about);
    if (std::find(args.begin(), args.end(), s.name) != args.end()) s.options(sub, cli);
  }
}

// The log's level (--log-level, then BPFMGR_LOG_LEVEL, SPDLOG_LEVEL; warn,
// info for serve) and format; libbpf's messages go through it.
void set_up_logging(const Cli& cli, bool serving) {
  auto logger = spdlog::stderr_color_mt("bpfmgr");
  configure_log_format(*logger, cli.log_format.empty() ? "text" : cli.log_format,
                       serving);
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL
  if (const char* env = std::getenv("BPFMGR_LOG_LEVEL"))
    spdlog::set_level(spdlog::level::from_str(env));
  // A service's journal should say what it did: serve logs at info.
  if (serving && cli.log_level.empty() && !std::getenv("BPFMGR_LOG_LEVEL"))
    spdlog::set_level(spdlog::level::info);
  if (!cli.log_level.empty()) spdlog::set_level(spdlog::level::from_str(cli.log_level));
  install_libbpf_logger();
}

int run_command(Cli& cli, const Commands& c) {
  try {
    if (*c.load) return cmd_load(cli.load);
    if (*c.validate) return cmd_validate(cli.validate_manifest, cli.validate_json);
    if (*c.unpin) {
      cli.unpin.pin_root = cli.pin_root;
      return cmd_unpin(cli.unpin);
    }
    if (*c.status)
      return cmd_status({cli.pin_root, cli.status_instances, cli.status_json, cli.status_check});
    if (*c.plugins) return cmd_plugins(cli.plugin_dirs, cli.plugins_json);
    if (*c.serve) return cmd_serve(cli.serve);
    if (*c.events) {
      cli.events.pin_root = cli.pin_root;
      return cmd_events(cli.events);
    }
    if (*c.bench) return cmd_bench(cli.bench_plugin, cli.bench_args);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitFailed;
  }
  return kExitInvalid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bpfmgr: a plugin-based BPF program manager.\n"
      "Loads the plugins a TOML manifest names, pins their programs, maps and\n"
      "links under a bpffs pin root so they keep running after bpfmgr exits,\n"
      "and shows or removes them again."};
  Cli cli;
  Commands c{};
  // The harness's arguments (after `bench PLUGIN`, --help included) never
  // reach bpfmgr's parser.
  std::vector<std::string> args(argv + 1, argv + argc);
  cli.bench_args = take_harness_args(args);
  add_global_options(app, cli);
  add_subcommands(app, cli, c, args);
  std::reverse(args.begin(), args.end());  // CLI11 takes them in reverse
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitInvalid;
  }

  set_up_logging(cli, static_cast<bool>(*c.serve));
  if (!cli.verifier_log.empty()) {
    try {
      set_verifier_log_file(cli.verifier_log);
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      return kExitInvalid;
    }
  }
  return run_command(cli, c);
}
