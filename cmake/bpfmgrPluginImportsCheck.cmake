# Fails if a shipped plugin .so can create namespaces or processes: the
# benchmarks that need netns, veths and child processes live under bench/,
# not in the plugins (cmake -P, run by the ctest `plugins_create_no_namespaces`).
#
#   cmake -DNM=... -DPLUGIN_DIR=... -P bpfmgrPluginImportsCheck.cmake
foreach(v NM PLUGIN_DIR)
  if(NOT ${v})
    message(FATAL_ERROR "bpfmgrPluginImportsCheck: ${v} is not set")
  endif()
endforeach()
set(forbidden setns unshare clone clone3 fork vfork execv execve execvp execvpe
    posix_spawn posix_spawnp mount system popen)
file(GLOB plugins "${PLUGIN_DIR}/*.so")
list(LENGTH plugins n)
if(n EQUAL 0)
  message(FATAL_ERROR "no plugins under ${PLUGIN_DIR}")
endif()
set(bad "")
foreach(so IN LISTS plugins)
  execute_process(COMMAND "${NM}" -D --undefined-only "${so}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm ${so}: ${err}")
  endif()
  get_filename_component(name "${so}" NAME)
  foreach(sym IN LISTS forbidden)
    # nm prints "U name" or "U name@GLIBC_x"
    if(out MATCHES "U ${sym}(@|\n)")
      list(APPEND bad "${name}: ${sym}")
    endif()
  endforeach()
  message(STATUS "${name}: checked")
endforeach()
if(bad)
  message(FATAL_ERROR "plugins import what creates namespaces or processes: ${bad}")
endif()
message(STATUS "${n} plugins create no namespaces or processes")
