// A plugin built for an API major version this bpfmgr does not speak.
#include <bpfmgr/plugin.hpp>

extern "C" BOOST_SYMBOL_EXPORT const bpfmgr::ApiVersion bpfmgr_plugin_api_version;
extern "C" BOOST_SYMBOL_EXPORT const bpfmgr::ApiVersion bpfmgr_plugin_api_version = {
    bpfmgr::kPluginApiVersion.major + 98, 0, 0};
extern "C" BOOST_SYMBOL_EXPORT bpfmgr::Plugin* bpfmgr_plugin_create() { return nullptr; }
