/* sigcount: a bpfmgr plugin in plain C99 against <bpfmgr/plugin_api.h>.
 *
 * Counts the signals the kernel generates, per signal number; `bpfmgr
 * status` shows one counter per signal seen ("signals.SIGTERM"), with its
 * per-CPU values. Everything crosses the boundary as C: the plugin fills in
 * a table of function pointers and exports one symbol,
 * bpfmgr_plugin_entry(). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <bpfmgr/plugin_api.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sigcount.h"
#include "sigcount.skel.h" /* sigcount_bpf__elf_bytes(): the BPF object */

static const bpfmgr_host *host; /* from bpfmgr_plugin_entry(): logging */

/* One instance's state, from create() to destroy(). */
struct sigcount {
  int32_t only_signal;
  bool only_delivered;
};

static int fail(bpfmgr_error *err, const char *message) {
  err->set(err, message, strlen(message));
  return BPFMGR_ERR_FAILED;
}

/* Every key of the schema is present: the core filled in the defaults. */
static const bpfmgr_option_value *option(const bpfmgr_options *o, const char *key) {
  for (size_t i = 0; i < o->count; ++i)
    if (strcmp(o->items[i].key, key) == 0) return &o->items[i].value;
  return NULL;
}

static int get_info(bpfmgr_plugin_info *info, bpfmgr_error *err) {
  (void)err;
  info->name = "sigcount";
  info->version = "0.1.0";
  info->description = "counts the signals the kernel generates, per signal (a plugin in C)";
  return BPFMGR_OK;
}

static int get_bpf_object(const void **data, size_t *size, bpfmgr_error *err) {
  (void)err;
  *data = sigcount_bpf__elf_bytes(size);
  return BPFMGR_OK;
}

/* Static storage: the core reads the schema until the library is unloaded. */
static const bpfmgr_option_spec schema[] = {
    {.name = "signal",
     .type = BPFMGR_OPTION_INT,
     .description = "count only this signal number (0: every signal)",
     .has_default = 1,
     .default_value = {.type = BPFMGR_OPTION_INT, .integer = 0},
     .has_min = 1,
     .has_max = 1,
     .min = 0,
     .max = SIGCOUNT_SLOTS - 1},
    {.name = "only_delivered",
     .type = BPFMGR_OPTION_BOOL,
     .description = "leave out signals dropped as ignored or already pending",
     .has_default = 1,
     .default_value = {.type = BPFMGR_OPTION_BOOL, .boolean = 0}},
};

static int option_schema(const bpfmgr_option_spec **specs, size_t *count, bpfmgr_error *err) {
  (void)err;
  *specs = schema;
  *count = sizeof schema / sizeof schema[0];
  return BPFMGR_OK;
}

/* What the schema cannot say: 32 and 33 are glibc's own real-time
 * signals (NPTL uses them; kill(1) cannot send them by name). */
static int validate(const bpfmgr_options *o, bpfmgr_problems *problems, bpfmgr_error *err) {
  const bpfmgr_option_value *sig = option(o, "signal");
  (void)err;
  if (sig && (sig->integer == 32 || sig->integer == 33))
    problems->add(problems, "signal", "signals 32 and 33 are reserved by the C library",
                  "real-time signals for programs start at 34 (SIGRTMIN)");
  return BPFMGR_OK;
}

static bpfmgr_instance *create(bpfmgr_context *ctx, bpfmgr_error *err) {
  const bpfmgr_options *o = ctx->ops->options(ctx);
  struct sigcount *s = calloc(1, sizeof *s);
  if (!s) {
    fail(err, "out of memory");
    return NULL;
  }
  s->only_signal = (int32_t)option(o, "signal")->integer;
  s->only_delivered = option(o, "only_delivered")->boolean != 0;
  {
    /* Logs go through bpfmgr's logger (--log-level debug shows this). */
    char line[160];
    snprintf(line, sizeof line, "sigcount: instance %s counts signal %d",
             ctx->ops->instance_name(ctx), (int)s->only_signal);
    host->log(host, BPFMGR_LOG_DEBUG, line, strlen(line));
  }
  return (bpfmgr_instance *)s;
}

static void destroy(bpfmgr_instance *inst) { free(inst); }

/* Between open and load: the `const volatile` globals. Sizes must match
 * BTF exactly (__s32: 4 bytes, bool: 1). */
static int before_load(bpfmgr_instance *inst, bpfmgr_context *ctx, bpfmgr_error *err) {
  struct sigcount *s = (struct sigcount *)inst;
  int rc = ctx->ops->set_global(ctx, "only_signal", &s->only_signal, sizeof s->only_signal, err);
  if (rc != BPFMGR_OK) return rc;
  return ctx->ops->set_global(ctx, "only_delivered", &s->only_delivered,
                              sizeof s->only_delivered, err);
}

static const char *const signal_names[] = {
    NULL,      "SIGHUP",  "SIGINT",    "SIGQUIT", "SIGILL",    "SIGTRAP", "SIGABRT",
    "SIGBUS",  "SIGFPE",  "SIGKILL",   "SIGUSR1", "SIGSEGV",   "SIGUSR2", "SIGPIPE",
    "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT",   "SIGSTOP", "SIGTSTP",
    "SIGTTIN", "SIGTTOU", "SIGURG",    "SIGXCPU", "SIGXFSZ",   "SIGVTALRM", "SIGPROF",
    "SIGWINCH", "SIGIO",  "SIGPWR",    "SIGSYS"};

static void signal_name(uint32_t sig, char *buf, size_t cap) {
  if (sig < sizeof signal_names / sizeof signal_names[0])
    snprintf(buf, cap, "%s", signal_names[sig]);
  else
    snprintf(buf, cap, "SIG%u", (unsigned)sig); /* real-time signals */
}

/* `bpfmgr status`: one counter per signal seen, summed over CPUs, with the
 * per-CPU values. The map is the pinned one; its fd belongs to the core. */
static int status(bpfmgr_instance *inst, bpfmgr_context *ctx, bpfmgr_error *err) {
  struct sigcount *s = (struct sigcount *)inst;
  int fd = -1, rc = ctx->ops->map_fd(ctx, "signals", &fd, err);
  int ncpu = libbpf_num_possible_cpus();
  uint64_t *per_cpu;
  char name[48], value[32];
  if (rc != BPFMGR_OK) return rc;
  if (ncpu <= 0) return fail(err, "cannot count the possible CPUs");
  per_cpu = calloc((size_t)ncpu, sizeof *per_cpu);
  if (!per_cpu) return fail(err, "out of memory");
  for (uint32_t sig = 1; sig < SIGCOUNT_SLOTS && rc == BPFMGR_OK; ++sig) {
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &sig, per_cpu) != 0) {
      rc = fail(err, "cannot read the signals map");
      break;
    }
    for (int i = 0; i < ncpu; ++i) sum += per_cpu[i];
    if (sum == 0) continue;
    signal_name(sig, value, sizeof value);
    snprintf(name, sizeof name, "signals.%s", value);
    rc = ctx->ops->add_counter(ctx, name, sum, per_cpu, (size_t)ncpu, err);
  }
  free(per_cpu);
  if (rc != BPFMGR_OK) return rc;
  if (s->only_signal)
    signal_name((uint32_t)s->only_signal, value, sizeof value);
  else
    snprintf(value, sizeof value, "all");
  rc = ctx->ops->add_detail(ctx, "counting", value, err);
  /* API 2.1: where the map is pinned, from the core (never built by hand).
   * A field newer than 2.0 is read only when the core's table has it. */
  if (rc == BPFMGR_OK && BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops, pin_path)) {
    const char *pin = NULL;
    rc = ctx->ops->pin_path(ctx, BPFMGR_PIN_MAP, "signals", &pin, err);
    if (rc == BPFMGR_OK) rc = ctx->ops->add_detail(ctx, "signals map", pin, err);
  }
  return rc;
}

BPFMGR_PLUGIN_EXPORT const bpfmgr_plugin_api *bpfmgr_plugin_entry(const bpfmgr_host *h) {
  static bpfmgr_plugin_api api;
  if (h->api_major != BPFMGR_PLUGIN_API_MAJOR) return NULL; /* the core names both */
  host = h;
  api.size = sizeof api;
  api.api_major = BPFMGR_PLUGIN_API_MAJOR;
  api.api_minor = BPFMGR_PLUGIN_API_MINOR;
  api.api_patch = BPFMGR_PLUGIN_API_PATCH;
  api.get_info = get_info;
  api.get_bpf_object = get_bpf_object;
  api.option_schema = option_schema;
  api.validate = validate;
  api.create = create;
  api.destroy = destroy;
  api.before_load = before_load;
  api.status = status;
  return &api;
}
