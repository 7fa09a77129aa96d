# Fails unless every plugin built by bpfmgr_add_plugin() exports exactly one
# dynamic symbol, bpfmgr_plugin_entry (cmake -P, run by the ctest
# `plugins_export_only_the_entry_point`). What else a plugin exported would
# be bound by the dynamic linker to other libraries' same-named symbols.
#
#   cmake -DNM=... -DPLUGINS=a.so|b.so|... -P bpfmgrPluginExportsCheck.cmake
foreach(v NM PLUGINS)
  if(NOT ${v})
    message(FATAL_ERROR "bpfmgrPluginExportsCheck: ${v} is not set")
  endif()
endforeach()
string(REPLACE "|" ";" plugins "${PLUGINS}")
set(bad "")
foreach(so IN LISTS plugins)
  execute_process(COMMAND "${NM}" -D --defined-only "${so}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm ${so}: ${err}")
  endif()
  # "0000000000005200 T bpfmgr_plugin_entry", one line per symbol
  string(REGEX MATCHALL "[^\n]+" lines "${out}")
  set(names "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[0-9a-fA-F]* *[A-Za-z] +" "" name "${line}")
    list(APPEND names "${name}")
  endforeach()
  list(LENGTH names n)
  get_filename_component(file "${so}" NAME)
  message(STATUS "${file}: ${n} dynamic symbol(s): ${names}")
  if(NOT names STREQUAL "bpfmgr_plugin_entry")
    list(APPEND bad "${file} (${n}: ${names})")
  endif()
endforeach()
list(LENGTH plugins total)
if(bad)
  message(FATAL_ERROR "plugins export more than bpfmgr_plugin_entry: ${bad}")
endif()
message(STATUS "${total} plugins export only bpfmgr_plugin_entry")
