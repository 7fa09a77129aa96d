/* A bpfmgr plugin in plain C99 against bpfmgr/plugin_api.h: no C++ at all.
 * Same BPF program as testcount (counts getppid() calls); per-instance state
 * from create(), a global set in before_load, a validate() problem,
 * counters and details from status, and (API 2.2) kernel requirements and a
 * typed metric. */
#include <bpf/bpf.h>
#include <bpfmgr/plugin_api.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Variants (CMakeLists.txt) rename the plugin and its skeleton, and one
 * says it was built for API 2.0: a plugin older than the core. */
#ifndef CCOUNT_NAME
#define CCOUNT_NAME "ccount"
#define CCOUNT_SKELETON "ccount.skel.h"
#define CCOUNT_ELF_BYTES ccount_bpf__elf_bytes
#endif
#ifndef CCOUNT_API_MINOR
#define CCOUNT_API_MINOR BPFMGR_PLUGIN_API_MINOR
#endif

#include CCOUNT_SKELETON

static const bpfmgr_host *host;

struct ccount {
  char label[64];
  uint32_t tgid;
};

static void say(bpfmgr_error *err, const char *msg) { err->set(err, msg, strlen(msg)); }

static const bpfmgr_option *find(const bpfmgr_options *o, const char *key) {
  for (size_t i = 0; i < o->count; ++i)
    if (strcmp(o->items[i].key, key) == 0) return &o->items[i];
  return NULL;
}

static int info(bpfmgr_plugin_info *out, bpfmgr_error *err) {
  (void)err;
  out->name = CCOUNT_NAME;
  out->version = "2.0.0";
  out->description = "counts getppid() calls (a plugin in C, core tests)";
  return BPFMGR_OK;
}

static int object(const void **data, size_t *size, bpfmgr_error *err) {
  (void)err;
  *data = CCOUNT_ELF_BYTES(size);
  return BPFMGR_OK;
}

static int schema(const bpfmgr_option_spec **specs, size_t *count, bpfmgr_error *err) {
  static bpfmgr_option_spec s[2];
  (void)err;
  s[0].name = "tgid";
  s[0].type = BPFMGR_OPTION_INT;
  s[0].description = "only count this process (0: all)";
  s[0].has_default = 1;
  s[0].default_value.type = BPFMGR_OPTION_INT;
  s[0].default_value.integer = 0;
  s[0].has_min = s[0].has_max = 1;
  s[0].min = 0;
  s[0].max = 4194304;
  s[1].name = "label";
  s[1].type = BPFMGR_OPTION_STRING;
  s[1].description = "shown by status";
  s[1].has_default = 1;
  s[1].default_value.type = BPFMGR_OPTION_STRING;
  s[1].default_value.string = "c";
  *specs = s;
  *count = 2;
  return BPFMGR_OK;
}

static int validate(const bpfmgr_options *o, bpfmgr_problems *problems, bpfmgr_error *err) {
  const bpfmgr_option *label = find(o, "label");
  (void)err;
  if (label && strlen(label->value.string) >= sizeof(((struct ccount *)0)->label))
    problems->add(problems, "label", "at most 63 characters", NULL);
  if (label && label->value.string[0] == '\0')
    problems->add(problems, "label", "must not be empty", "label = \"c\"");
  return BPFMGR_OK;
}

static bpfmgr_instance *create(bpfmgr_context *ctx, bpfmgr_error *err) {
  const bpfmgr_options *o = ctx->ops->options(ctx);
  const bpfmgr_option *tgid = find(o, "tgid"), *label = find(o, "label");
  struct ccount *c = calloc(1, sizeof *c);
  char line[160];
  if (!c) {
    say(err, "out of memory");
    return NULL;
  }
  c->tgid = tgid ? (uint32_t)tgid->value.integer : 0;
  snprintf(c->label, sizeof c->label, "%s", label ? label->value.string : "c");
  snprintf(line, sizeof line, "instance %s created", ctx->ops->instance_name(ctx));
  host->log(host, BPFMGR_LOG_DEBUG, line, strlen(line));
  return (bpfmgr_instance *)c;
}

static void destroy(bpfmgr_instance *inst) { free(inst); }

static int before_load(bpfmgr_instance *inst, bpfmgr_context *ctx, bpfmgr_error *err) {
  struct ccount *c = (struct ccount *)inst;
  return ctx->ops->set_global(ctx, "target_tgid", &c->tgid, sizeof c->tgid, err);
}

static int attach(bpfmgr_instance *inst, bpfmgr_context *ctx, bpfmgr_error *err) {
  int attached = 0;
  (void)inst;
  return ctx->ops->attach_auto(ctx, "optional_missing", 1, &attached, err);
}

static int status(bpfmgr_instance *inst, bpfmgr_context *ctx, bpfmgr_error *err) {
  struct ccount *c = (struct ccount *)inst;
  struct {
    uint64_t calls, last_pid;
  } v = {0, 0};
  uint32_t key = 0;
  int fd = -1, rc = ctx->ops->map_fd(ctx, "stats", &fd, err);
  if (rc != BPFMGR_OK) return rc;
  if (bpf_map_lookup_elem(fd, &key, &v) != 0) v.calls = 0;
  rc = ctx->ops->add_counter(ctx, "getppid_calls", v.calls, NULL, 0, err);
  if (rc != BPFMGR_OK) return rc;
#if CCOUNT_API_MINOR >= 1
  /* A field appended in 2.1: read only when the core's table has it. */
  if (BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops, pin_path)) {
    const char *pin = NULL;
    rc = ctx->ops->pin_path(ctx, BPFMGR_PIN_MAP, "stats", &pin, err);
    if (rc != BPFMGR_OK) return rc;
    rc = ctx->ops->add_detail(ctx, "stats_pin", pin, err);
    if (rc != BPFMGR_OK) return rc;
  }
#endif
#if CCOUNT_API_MINOR >= 2
  /* 2.2: the kernel's release and a typed, labelled sample. */
  if (BPFMGR_HAS_FIELD(ctx->ops, bpfmgr_context_ops, add_metric)) {
    const bpfmgr_kernel *k = ctx->ops->kernel(ctx);
    bpfmgr_label source = {"source", "c"};
    rc = ctx->ops->add_detail(ctx, "kernel", k->ops->release(k), err);
    if (rc != BPFMGR_OK) return rc;
    rc = ctx->ops->add_metric(ctx, "calls", BPFMGR_METRIC_COUNTER, "getppid() calls",
                              &source, 1, (double)v.calls, err);
    if (rc != BPFMGR_OK) return rc;
  }
#endif
  return ctx->ops->add_detail(ctx, "label", c->label, err);
}

#if CCOUNT_API_MINOR >= 2
/* 2.2: the tracepoint it counts on, and (label = "needs-missing-kfunc") a
 * kfunc no kernel has, refused by validate at the label's line. */
static int kernel_requirements(const bpfmgr_options *o, bpfmgr_kernel *k, bpfmgr_error *err) {
  const bpfmgr_option *label = find(o, "label");
  (void)err;
  k->ops->require(k, BPFMGR_FEATURE_TRACEPOINT, "syscalls/sys_enter_getppid", NULL, NULL,
                  NULL);
  if (label && strcmp(label->value.string, "needs-missing-kfunc") == 0)
    k->ops->require(k, BPFMGR_FEATURE_KFUNC, "bpfmgr_test_no_such_kfunc", "label", "9.9",
                    "label = \"c\"");
  return BPFMGR_OK;
}
#endif

BPFMGR_PLUGIN_EXPORT const bpfmgr_plugin_api *bpfmgr_plugin_entry(const bpfmgr_host *h) {
  static bpfmgr_plugin_api api;
  if (h->api_major != BPFMGR_PLUGIN_API_MAJOR) return NULL;
  host = h;
  api.size = sizeof api;
  api.api_major = BPFMGR_PLUGIN_API_MAJOR;
  api.api_minor = CCOUNT_API_MINOR;
  api.api_patch = BPFMGR_PLUGIN_API_PATCH;
  api.get_info = info;
  api.get_bpf_object = object;
  api.create = create;
  api.destroy = destroy;
  api.option_schema = schema;
  api.validate = validate;
  api.before_load = before_load;
  api.attach = attach;
  api.status = status;
#if CCOUNT_API_MINOR >= 2
  api.kernel_requirements = kernel_requirements;
#endif
  return &api;
}
