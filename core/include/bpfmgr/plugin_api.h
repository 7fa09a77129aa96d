/* bpfmgr plugin ABI, version 2: the whole contract between bpfmgr and a
 * plugin library, in plain C (compiles as C99 and as C++).
 *
 * A plugin library exports exactly one symbol, bpfmgr_plugin_entry(). The
 * core passes it a host table (its API version and a logging callback) and
 * gets back the plugin's function table. Nothing but C types crosses the
 * boundary: no C++ object, no exception, no allocation freed on the other
 * side. A plugin may therefore use any C++ standard library (libstdc++,
 * libc++) or none, and needs neither spdlog nor Boost.
 *
 * Versioning (like libbpf's opts structs and falcosecurity's plugin API):
 *  - every table starts with `size`, the sizeof() its producer was compiled
 *    with; fields are only ever appended, and a reader checks that `size`
 *    covers a field before it touches it;
 *  - a minor version appends fields, a major version changes what exists;
 *  - the core refuses a plugin of another major, or of a newer minor than
 *    its own (then: "upgrade bpfmgr"), naming the file and both versions.
 *    BPFMGR_HAS_FIELD() is the size check.
 *
 * History: 2.0 the C ABI; 2.1 appends bpfmgr_context_ops.pin_path; 2.2
 * appends kernel features (bpfmgr_plugin_api.kernel_requirements,
 * bpfmgr_context_ops.kernel) and typed, labelled metrics
 * (bpfmgr_context_ops.add_metric).
 *
 * Ownership:
 *  - strings are NUL-terminated UTF-8 `const char *` views. A string the
 *    core hands in lives until the call returns (context strings: as long as
 *    the context). A string the plugin hands out from a global entry
 *    (get_info, option_schema, events_map) must live until the library is
 *    unloaded: static storage is the simple choice.
 *  - lists are (pointer, count) views with the same lifetime as strings.
 *  - errors: every fallible call returns a bpfmgr_rc and, on failure, may
 *    call err->set() with a message; the callee's side owns nothing after
 *    the call. The same holds for calls the plugin makes into the context.
 *  - file descriptors from the context are borrowed: never close them.
 *
 * Threads: the core calls a plugin from one thread at a time. */
#ifndef BPFMGR_PLUGIN_API_H
#define BPFMGR_PLUGIN_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BPFMGR_PLUGIN_API_MAJOR 2
#define BPFMGR_PLUGIN_API_MINOR 2
#define BPFMGR_PLUGIN_API_PATCH 0

/* Whether `table` (a pointer to a table of type `type`, with its leading
 * `size`) has `field`: fields appended by a later minor are absent from a
 * table made by an earlier one. */
#define BPFMGR_HAS_FIELD(table, type, field) \
  ((table)->size >= offsetof(type, field) + sizeof((table)->field))

/* The one symbol a plugin exports. */
#define BPFMGR_PLUGIN_ENTRY_SYMBOL "bpfmgr_plugin_entry"

#if defined(__GNUC__) || defined(__clang__)
#define BPFMGR_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define BPFMGR_PLUGIN_EXPORT
#endif

/* ----------------------------------------------------------------- errors */

typedef enum bpfmgr_rc {
  BPFMGR_OK = 0,
  BPFMGR_ERR_FAILED = 1,    /* the operation failed; the message says why */
  BPFMGR_ERR_INVALID = 2,   /* bad argument, or called outside its hook */
  BPFMGR_ERR_NOT_FOUND = 3, /* no such map, program, global or option */
  BPFMGR_ERR_NO_SPACE = 4,  /* caller's buffer too small; *len says how much */
  BPFMGR_ERR_EXCEPTION = 5  /* C++ code threw something not a std::exception */
} bpfmgr_rc;

/* An error sink owned by the caller. The callee calls set() at most a few
 * times (the last message wins); set() copies `len` bytes of `message`,
 * which need not be NUL-terminated, and never fails. */
typedef struct bpfmgr_error {
  void (*set)(struct bpfmgr_error *self, const char *message, size_t len);
} bpfmgr_error;

/* --------------------------------------------------------------- the host */

typedef enum bpfmgr_log_level {
  BPFMGR_LOG_TRACE = 0,
  BPFMGR_LOG_DEBUG = 1,
  BPFMGR_LOG_INFO = 2,
  BPFMGR_LOG_WARN = 3,
  BPFMGR_LOG_ERROR = 4
} bpfmgr_log_level;

/* Handed to bpfmgr_plugin_entry(); lives until the library is unloaded. */
typedef struct bpfmgr_host {
  size_t size;
  uint32_t api_major, api_minor, api_patch; /* the core's plugin API */
  /* Logs one message through bpfmgr's logger (--log-level applies);
   * `message` need not be NUL-terminated. Copies; never fails. */
  void (*log)(const struct bpfmgr_host *host, uint32_t level,
              const char *message, size_t len);
} bpfmgr_host;

/* ---------------------------------------------------------------- options */

typedef enum bpfmgr_option_type {
  BPFMGR_OPTION_BOOL = 1,
  BPFMGR_OPTION_INT = 2,
  BPFMGR_OPTION_STRING = 3,
  BPFMGR_OPTION_STRING_LIST = 4,
  BPFMGR_OPTION_INT_LIST = 5
} bpfmgr_option_type;

/* One typed value; only the members of its type are meaningful. */
typedef struct bpfmgr_option_value {
  uint32_t type;               /* bpfmgr_option_type */
  int32_t boolean;             /* BOOL: 0 or 1 */
  int64_t integer;             /* INT */
  const char *string;          /* STRING */
  const char *const *strings;  /* STRING_LIST: `count` strings */
  const int64_t *integers;     /* INT_LIST: `count` integers */
  size_t count;
} bpfmgr_option_value;

typedef struct bpfmgr_option {
  const char *key;
  bpfmgr_option_value value;
} bpfmgr_option;

/* An instance's options after the core checked them against the schema
 * and filled in defaults: every key of the schema is present. */
typedef struct bpfmgr_options {
  const bpfmgr_option *items;
  size_t count;
} bpfmgr_options;

/* One entry of a plugin's option schema. */
typedef struct bpfmgr_option_spec {
  const char *name;
  uint32_t type;           /* bpfmgr_option_type */
  const char *description;
  int32_t has_default;     /* 0: the option is required */
  bpfmgr_option_value default_value;
  int32_t has_min, has_max; /* inclusive bounds for INT and INT_LIST items */
  int64_t min, max;
  const char *const *choices; /* allowed STRING / STRING_LIST items */
  size_t n_choices;
} bpfmgr_option_spec;

/* Where validate() reports problems; `key` names the option so the core can
 * point at its line in the manifest; `hint` may be NULL. */
typedef struct bpfmgr_problems {
  void (*add)(struct bpfmgr_problems *self, const char *key,
              const char *message, const char *hint);
} bpfmgr_problems;

/* ------------------------------------------------ kernel features (API 2.2)
 * A plugin states what the running kernel must have for an instance with
 * given options; the core checks each need against one probe of the running
 * kernel before anything is loaded (validate, and load before staging), and
 * refuses the instance naming the feature, the kernel that has it and the
 * option that avoids it. A verifier or CO-RE failure at load is then a bug
 * in the plugin's declared needs. Where a feature has a simpler form, the
 * plugin picks it (set_autoload, globals) and says so with degrade(). */

typedef enum bpfmgr_feature_kind {
  /* libbpf's names (libbpf_bpf_prog_type_str): "sk_msg", "sock_ops",
   * "tracepoint", "raw_tracepoint", "tracing", "lsm", ... */
  BPFMGR_FEATURE_PROG_TYPE = 1,
  /* libbpf's names (libbpf_bpf_map_type_str): "sockhash", "sk_storage",
   * "ringbuf", ... */
  BPFMGR_FEATURE_MAP_TYPE = 2,
  /* "PROG_TYPE:HELPER": the helper is callable from that program type,
   * e.g. "sock_ops:bpf_get_netns_cookie". */
  BPFMGR_FEATURE_HELPER = 3,
  /* A kfunc the kernel's BTF declares, e.g. "bpf_rdonly_cast". */
  BPFMGR_FEATURE_KFUNC = 4,
  /* A type of the kernel's BTF: "struct tcp_sock", "enum bpf_link_type". */
  BPFMGR_FEATURE_BTF_TYPE = 5,
  /* A member of a kernel struct or union: "struct tcp_sock.snd_una". */
  BPFMGR_FEATURE_BTF_FIELD = 6,
  /* An enumerator of the kernel's BTF: "BPF_SOCK_OPS_HDR_OPT_LEN_CB". */
  BPFMGR_FEATURE_BTF_ENUM_VALUE = 7,
  /* A tracepoint, "CATEGORY/NAME": "tcp/tcp_retransmit_skb". */
  BPFMGR_FEATURE_TRACEPOINT = 8,
  /* libbpf's names (libbpf_bpf_link_type_str): "cgroup", "perf_event",
   * "raw_tracepoint", "tracing", ... */
  BPFMGR_FEATURE_LINK_TYPE = 9
} bpfmgr_feature_kind;

typedef struct bpfmgr_kernel bpfmgr_kernel;

typedef struct bpfmgr_kernel_ops {
  size_t size;
  /* 1 if the running kernel has the feature, 0 if not or if `kind` is
   * unknown to this core. Answers come from one probe per process. */
  int (*has)(const bpfmgr_kernel *k, uint32_t kind, const char *name);
  /* The running kernel's release, as uname -r says ("6.1.0-28-amd64"). */
  const char *(*release)(const bpfmgr_kernel *k);
  /* kernel_requirements only. The instance needs the feature; when the
   * kernel lacks it the instance is refused with the message
   * "`key` ...: needs <feature> (Linux <since>+); this kernel is <release>"
   * and `hint`. `key` names the option that asks for the feature (NULL:
   * the plugin itself), so the core can point at its manifest line; `since`
   * (the first kernel release that has it) and `hint` may be NULL. */
  void (*require)(bpfmgr_kernel *k, uint32_t kind, const char *name,
                  const char *key, const char *since, const char *hint);
  /* kernel_requirements only. The instance runs in a simpler form than its
   * richest one on this kernel: `what` runs, `because` says why, e.g.
   * ("rcvbuf read through probe_read", "no BTF for tcp_sock.sk_userlocks").
   * Shown by status, --json and metrics. */
  void (*degrade)(bpfmgr_kernel *k, const char *what, const char *because);
} bpfmgr_kernel_ops;

struct bpfmgr_kernel {
  const bpfmgr_kernel_ops *ops;
};

/* ---------------------------------------------------- metrics (API 2.2) */

typedef enum bpfmgr_metric_kind {
  BPFMGR_METRIC_COUNTER = 1, /* only goes up (a `_total` is appended) */
  BPFMGR_METRIC_GAUGE = 2
} bpfmgr_metric_kind;

typedef struct bpfmgr_label {
  const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not "instance" or "plugin" */
  const char *value;
} bpfmgr_label;

/* ---------------------------------------------------------------- context */

/* What a hook sees of its instance, implemented by the core. Every call
 * checks that the running hook allows it (e.g. set_global only in
 * before_load) and fails with BPFMGR_ERR_INVALID otherwise. */
typedef struct bpfmgr_context bpfmgr_context;

/* What pin_path() names. */
typedef enum bpfmgr_pin_kind {
  BPFMGR_PIN_MAP = 1,
  BPFMGR_PIN_PROG = 2,
  BPFMGR_PIN_LINK = 3
} bpfmgr_pin_kind;

typedef struct bpfmgr_context_ops {
  size_t size;
  /* Valid as long as the context. */
  const char *(*instance_name)(const bpfmgr_context *ctx);
  const char *(*pin_dir)(const bpfmgr_context *ctx); /* <pin_root>/<instance> */
  const char *(*cgroup2_root)(const bpfmgr_context *ctx);
  const bpfmgr_options *(*options)(const bpfmgr_context *ctx);

  /* before_load only. set_global writes a global variable (`const
   * volatile` in .rodata, or .data/.bss); `size` must equal its BTF size. */
  int (*set_global)(bpfmgr_context *ctx, const char *var, const void *data,
                    size_t size, bpfmgr_error *err);
  int (*set_max_entries)(bpfmgr_context *ctx, const char *map, uint32_t n,
                         bpfmgr_error *err);
  /* A program not loaded is neither attached nor pinned. */
  int (*set_autoload)(bpfmgr_context *ctx, const char *prog, int load,
                      bpfmgr_error *err);

  /* after_load, attach, after_attach (prog_fd), and also status,
   * before_unpin and event formatting (map_fd on the pinned map). */
  int (*map_fd)(bpfmgr_context *ctx, const char *map, int *fd,
                bpfmgr_error *err);
  int (*prog_fd)(bpfmgr_context *ctx, const char *prog, int *fd,
                 bpfmgr_error *err);

  /* attach only. Each attachment becomes a pinned link (or a recorded
   * attachment), undone on rollback and by unpin. `cgroup_path` is resolved
   * by the rule of <bpfmgr/cgroup.hpp> (the one validate checks options
   * by). `attach_type` is a bpf_attach_type.
   * attach_auto attaches by SEC() name; with `optional`, a failure is
   * logged and shown as a dead hook by status, and *attached says 0. */
  int (*attach_cgroup)(bpfmgr_context *ctx, const char *prog,
                       const char *cgroup_path, bpfmgr_error *err);
  int (*attach_map)(bpfmgr_context *ctx, const char *prog, const char *map,
                    uint32_t attach_type, bpfmgr_error *err);
  int (*attach_auto)(bpfmgr_context *ctx, const char *prog, int optional,
                     int *attached, bpfmgr_error *err);

  /* status only. A counter's `value` is shown; `per_cpu` (may be NULL)
   * lists the per-CPU values it sums. Details are shown as key: value. */
  int (*add_counter)(bpfmgr_context *ctx, const char *name, uint64_t value,
                     const uint64_t *per_cpu, size_t n_cpu, bpfmgr_error *err);
  int (*add_detail)(bpfmgr_context *ctx, const char *key, const char *value,
                    bpfmgr_error *err);

  /* ---- API 2.1: check BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops,
   * pin_path) first. */
  /* Every hook. Where the map, program or link `name` (a bpfmgr_pin_kind)
   * of this instance is pinned once its load is committed, as bpftool and
   * the file system see it; a map shared from another instance is that
   * instance's pin. Says nothing about whether the pin exists (a link of an
   * optional hook may not). Plugins never build pin paths themselves.
   * `name` must be a plain name (no '/'). *path lives as long as the
   * context. */
  int (*pin_path)(const bpfmgr_context *ctx, uint32_t kind, const char *name,
                  const char **path, bpfmgr_error *err);

  /* ---- API 2.2: check BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops,
   * add_metric) first. */
  /* Every hook. The running kernel's features (has, release; require and
   * degrade are refused outside kernel_requirements). Lives as long as the
   * context. */
  const bpfmgr_kernel *(*kernel)(const bpfmgr_context *ctx);
  /* status only. One sample of metric `name` (bpfmgr exports it as
   * bpfmgr_plugin_<plugin>_<name>, with the instance's labels added) with
   * `labels`; samples of one name must agree on kind and label names.
   * `help` may be NULL. */
  int (*add_metric)(bpfmgr_context *ctx, const char *name, uint32_t kind,
                    const char *help, const bpfmgr_label *labels,
                    size_t n_labels, double value, bpfmgr_error *err);
} bpfmgr_context_ops;

struct bpfmgr_context {
  const bpfmgr_context_ops *ops;
};

/* ------------------------------------------------------- the plugin table */

/* The plugin's own state for one instance: made by create(), handed to
 * every hook of that instance, freed by destroy(). A load makes one per
 * instance it stages; status, unpin and events make one per instance they
 * look at. */
typedef struct bpfmgr_instance bpfmgr_instance;

typedef struct bpfmgr_plugin_info {
  const char *name;        /* what manifests put in `plugin = "..."` */
  const char *version;     /* the plugin's own version (semver) */
  const char *description;
} bpfmgr_plugin_info;

typedef enum bpfmgr_event_format {
  BPFMGR_EVENT_TABLE = 0,
  BPFMGR_EVENT_JSON = 1
} bpfmgr_event_format;

typedef struct bpfmgr_plugin_api {
  size_t size; /* sizeof(bpfmgr_plugin_api) as the plugin was compiled */
  uint32_t api_major, api_minor, api_patch; /* BPFMGR_PLUGIN_API_* */

  /* ---- required */
  int (*get_info)(bpfmgr_plugin_info *info, bpfmgr_error *err);
  /* The embedded BPF ELF object (e.g. NAME_bpf__elf_bytes()). The core
   * asks once, when it loads the plugin, and keeps the pointer: the bytes
   * must stay valid and unchanged while the plugin is loaded. */
  int (*get_bpf_object)(const void **data, size_t *size, bpfmgr_error *err);

  /* ---- optional: NULL means "nothing to do" / "none" */
  /* Both or neither. create() returns NULL on failure (and sets err). */
  bpfmgr_instance *(*create)(bpfmgr_context *ctx, bpfmgr_error *err);
  void (*destroy)(bpfmgr_instance *inst);

  int (*option_schema)(const bpfmgr_option_spec **specs, size_t *count,
                       bpfmgr_error *err);
  /* Checks beyond the schema; problems go to `problems`, a failure of the
   * check itself to the return value. */
  int (*validate)(const bpfmgr_options *options, bpfmgr_problems *problems,
                  bpfmgr_error *err);

  /* Lifecycle, in this order (see docs/plugin-sdk.md). */
  int (*before_load)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                     bpfmgr_error *err);
  int (*after_load)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                    bpfmgr_error *err);
  int (*attach)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                bpfmgr_error *err);
  int (*after_attach)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                      bpfmgr_error *err);
  int (*status)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                bpfmgr_error *err);
  /* NULL when there is nothing to do: unpin (recorded at load) then does
   * not load the plugin at all. */
  int (*before_unpin)(bpfmgr_instance *inst, bpfmgr_context *ctx,
                      bpfmgr_error *err);

  /* Events: the pinned ring buffer's map name (*map NULL: none). */
  int (*events_map)(const char **map, bpfmgr_error *err);
  /* Writes a NUL-terminated line into buf (cap bytes) and its length
   * (without the NUL) into *len; *len == 0 skips the record. When cap is
   * too small: BPFMGR_ERR_NO_SPACE with *len = the length needed. */
  int (*event_header)(bpfmgr_instance *inst, char *buf, size_t cap,
                      size_t *len);
  int (*format_event)(bpfmgr_instance *inst, const void *record,
                      size_t record_size, uint32_t format, char *buf,
                      size_t cap, size_t *len);

  /* ---- API 2.2: check BPFMGR_HAS_FIELD(api, bpfmgr_plugin_api,
   * kernel_requirements) first. */
  /* What an instance with these options needs from the running kernel
   * (kernel->ops->require) and where it runs a simpler form
   * (kernel->ops->degrade); kernel->ops->has tells what the kernel has. Called
   * by validate and by load before anything is staged; must decide the same
   * way as before_load does (both see the same kernel). */
  int (*kernel_requirements)(const bpfmgr_options *options,
                             bpfmgr_kernel *kernel, bpfmgr_error *err);
} bpfmgr_plugin_api;

/* The end of the fields API 2.0 has: a table smaller than this is refused. */
#define BPFMGR_PLUGIN_API_MIN_SIZE \
  (offsetof(bpfmgr_plugin_api, get_bpf_object) + sizeof(void *))

typedef const bpfmgr_plugin_api *(*bpfmgr_plugin_entry_fn)(
    const bpfmgr_host *host);

/* Implemented by the plugin. Returns its table (static storage), or NULL
 * when it cannot work with this host (it may log why through host->log). */
BPFMGR_PLUGIN_EXPORT const bpfmgr_plugin_api *bpfmgr_plugin_entry(
    const bpfmgr_host *host);

#ifdef __cplusplus
}
#endif

#endif /* BPFMGR_PLUGIN_API_H */
