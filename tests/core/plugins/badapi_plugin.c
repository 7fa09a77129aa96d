/* Libraries the core must refuse, one reason per -D (see CMakeLists.txt):
 * each names the reason in the core's message. */
#include <bpfmgr/plugin_api.h>

#include <stddef.h>

#ifdef BADAPI_OLD
/* What a plugin built for API 1 (a C++ vtable) exported. */
struct api1_version {
  uint32_t major, minor, patch;
};
BPFMGR_PLUGIN_EXPORT const struct api1_version bpfmgr_plugin_api_version = {1, 0, 0};
BPFMGR_PLUGIN_EXPORT void *bpfmgr_plugin_create(void) { return NULL; }
#else

static int info(bpfmgr_plugin_info *out, bpfmgr_error *err) {
  (void)err;
  out->name = "bad";
  out->version = "0.0.1";
  out->description = "refused by the core";
  return BPFMGR_OK;
}

static int object(const void **data, size_t *size, bpfmgr_error *err) {
  static const char not_elf[] = "not an ELF object";
  (void)err;
  *data = not_elf;
  *size = sizeof not_elf;
  return BPFMGR_OK;
}

const bpfmgr_plugin_api *bpfmgr_plugin_entry(const bpfmgr_host *host) {
  static bpfmgr_plugin_api api;
  (void)host;
  api.size = sizeof api;
  api.api_major = BPFMGR_PLUGIN_API_MAJOR;
  api.api_minor = BPFMGR_PLUGIN_API_MINOR;
  api.api_patch = 0;
  api.get_info = info;
  api.get_bpf_object = object;
#if defined(BADAPI_NEWER_MINOR)
  api.api_minor = BPFMGR_PLUGIN_API_MINOR + 5;
#elif defined(BADAPI_NEWER_MAJOR)
  api.api_major = 99;
  api.api_minor = 0;
#elif defined(BADAPI_NO_TABLE)
  return NULL;
#elif defined(BADAPI_MISSING_ENTRY)
  api.get_bpf_object = NULL;
#elif defined(BADAPI_SMALL_TABLE)
  api.size = offsetof(bpfmgr_plugin_api, get_info);
#endif
  return &api;
}
#endif
