# bpfmgr_add_plugin(): builds one bpfmgr plugin from a BPF C file and C++
# sources. Used in tree and, installed with the SDK, by third-party plugins.
#
#   bpfmgr_add_plugin(NAME sockops
#                     BPF sockops.bpf.c
#                     SOURCES sockops_plugin.cpp
#                     [BPF_INCLUDES dir...]   # extra -I for the BPF compile
#                     [LINK_LIBRARIES lib...]  # their include dirs reach
#                                              # the BPF compile too
#                     [OUTPUT_DIRECTORY dir]
#                     [BENCH bench_sockops.cpp...]  # a harness, see bpfmgr_add_bench
#                     [EXPORTS symbol...]       # more dynamic symbols (rarely)
#                     [NO_INSTALL])             # test-only plugins
#
# The BPF file is compiled with clang -target bpf against a vmlinux.h made
# from the running kernel's BTF (CO-RE), turned into a libbpf skeleton
# `<NAME>.skel.h` (struct <NAME>_bpf, <NAME>_bpf__elf_bytes()), and that
# header is included by the C++ sources, so the .so carries its own object.
# The result is a MODULE library `bpfmgr-<NAME>.so` exporting only the
# entry point, bpfmgr_plugin_entry (BPFMGR_PLUGIN() in C++): sources are
# compiled with hidden visibility and linked with a version script that
# makes every other symbol local, including the template instantiations
# libstdc++ marks visible (std::map<std::string, ...>::find and the like), so
# two plugins never bind to each other's copies. The sources may be C++
# (any standard library) or plain C (a C-only project works).
#
# With BPFMGR_PLUGIN_STATIC_RUNTIME=ON (bpfmgr's own build sets it), the
# plugin carries its C++ runtime (-static-libstdc++ -static-libgcc) instead
# of bringing the shared libstdc++.so, whose mapping and relocation were
# 0.75 ms of every `bpfmgr load` (docs/benchmarks.md). Safe because nothing
# C++ crosses the plugin ABI and the version script keeps the copy local;
# the cost is that a libstdc++ fix reaches the plugin only by a rebuild.

find_program(BPFMGR_CLANG NAMES clang clang-19 clang-16 clang-14 REQUIRED)
find_program(BPFMGR_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
set(BPFMGR_VMLINUX_BTF /sys/kernel/btf/vmlinux CACHE FILEPATH
    "Kernel BTF that vmlinux.h is generated from")
# __TARGET_ARCH_* for libbpf's bpf_tracing.h and bpfmgr/syscalls.h: the
# architecture the plugin is built for (x86, arm64).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set(_bpfmgr_default_arch arm64)
else()
  set(_bpfmgr_default_arch x86)
endif()
set(BPFMGR_BPF_ARCH ${_bpfmgr_default_arch} CACHE STRING
    "__TARGET_ARCH_ of BPF objects (x86, arm64)")
option(BPFMGR_PLUGIN_STATIC_RUNTIME
       "Link the C++ runtime into each plugin rather than load libstdc++.so" OFF)

# Warnings of every BPF compile (here and in the arm64 check): static
# inline helpers in shared headers are unused by some objects; a call to an
# undeclared helper must fail, not become an int-returning guess.
set(BPFMGR_BPF_WARNINGS -Wall -Wno-unused-function
    -Werror=implicit-function-declaration)

# Where this file lives decides where the SDK's BPF headers are: the source
# tree's bpf/include in tree, <prefix>/include when installed.
set(_bpfmgr_plugin_cmake_dir "${CMAKE_CURRENT_LIST_DIR}")

function(_bpfmgr_vmlinux_target)
  if(TARGET bpfmgr_vmlinux)
    return()
  endif()
  set(dir "${CMAKE_BINARY_DIR}/bpfmgr-vmlinux")
  file(MAKE_DIRECTORY "${dir}")
  add_custom_command(
    OUTPUT "${dir}/vmlinux.h"
    COMMAND "${BPFMGR_BPFTOOL}" btf dump file "${BPFMGR_VMLINUX_BTF}" format c
            > "${dir}/vmlinux.h.tmp"
    COMMAND ${CMAKE_COMMAND} -E rename "${dir}/vmlinux.h.tmp" "${dir}/vmlinux.h"
    COMMENT "Generating vmlinux.h from ${BPFMGR_VMLINUX_BTF}"
    VERBATIM)
  add_custom_target(bpfmgr_vmlinux DEPENDS "${dir}/vmlinux.h")
  set_property(GLOBAL PROPERTY BPFMGR_VMLINUX_DIR "${dir}")
endfunction()

function(bpfmgr_add_plugin)
  cmake_parse_arguments(P "NO_INSTALL" "NAME;BPF;OUTPUT_DIRECTORY"
                        "SOURCES;BPF_INCLUDES;LINK_LIBRARIES;BENCH;EXPORTS" ${ARGN})
  if(NOT P_NAME OR NOT P_BPF OR NOT P_SOURCES)
    message(FATAL_ERROR "bpfmgr_add_plugin: NAME, BPF and SOURCES are required")
  endif()
  _bpfmgr_vmlinux_target()
  get_property(vmlinux_dir GLOBAL PROPERTY BPFMGR_VMLINUX_DIR)

  get_filename_component(bpf_src "${P_BPF}" ABSOLUTE)
  set(gen "${CMAKE_CURRENT_BINARY_DIR}/${P_NAME}.gen")
  file(MAKE_DIRECTORY "${gen}")
  set(obj "${gen}/${P_NAME}.bpf.o")
  set(skel "${gen}/${P_NAME}.skel.h")

  set(includes -I${vmlinux_dir} -I${CMAKE_CURRENT_SOURCE_DIR})
  # The BPF compile sees the include directories of the SDK and of every
  # target in LINK_LIBRARIES (e.g. an INTERFACE target holding a header the
  # BPF and C++ sides share), so one target carries a contract to both.
  foreach(lib IN ITEMS bpfmgr::sdk LISTS P_LINK_LIBRARIES)
    if(NOT TARGET ${lib})
      continue()
    endif()
    get_target_property(lib_incs ${lib} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT lib_incs)
      continue()
    endif()
    foreach(i IN LISTS lib_incs)
      string(REGEX REPLACE "^\\$<BUILD_INTERFACE:(.*)>$" "\\1" i "${i}")
      if(NOT i MATCHES "^\\$<")
        list(APPEND includes -I${i})
      endif()
    endforeach()
  endforeach()
  foreach(i IN LISTS P_BPF_INCLUDES)
    get_filename_component(i "${i}" ABSOLUTE)
    list(APPEND includes -I${i})
  endforeach()

  # Header dependencies of the BPF file: clang's depfile names every header
  # it included (the SDK's bpf/include too); the glob covers a fresh tree.
  file(GLOB bpf_deps "${CMAKE_CURRENT_SOURCE_DIR}/*.h")
  add_custom_command(
    OUTPUT "${obj}"
    COMMAND "${BPFMGR_CLANG}" -O2 -g -target bpf -D__TARGET_ARCH_${BPFMGR_BPF_ARCH}
            ${BPFMGR_BPF_WARNINGS}
            ${includes} -MD -MF "${obj}.d" -c "${bpf_src}" -o "${obj}"
    DEPFILE "${obj}.d"
    DEPENDS "${bpf_src}" ${bpf_deps} bpfmgr_vmlinux "${vmlinux_dir}/vmlinux.h"
    COMMENT "BPF ${P_NAME}: clang -target bpf ${P_BPF}"
    VERBATIM)
  add_custom_command(
    OUTPUT "${skel}"
    COMMAND "${BPFMGR_BPFTOOL}" gen skeleton "${obj}" name "${P_NAME}_bpf"
            > "${skel}.tmp"
    COMMAND ${CMAKE_COMMAND} -E rename "${skel}.tmp" "${skel}"
    DEPENDS "${obj}"
    COMMENT "BPF ${P_NAME}: skeleton"
    VERBATIM)
  add_custom_target(${P_NAME}_bpf_skel DEPENDS "${skel}")

  set(target bpfmgr-plugin-${P_NAME})
  add_library(${target} MODULE ${P_SOURCES})
  add_dependencies(${target} ${P_NAME}_bpf_skel)
  target_include_directories(${target} PRIVATE "${gen}" "${vmlinux_dir}")
  target_link_libraries(${target} PRIVATE bpfmgr::sdk ${P_LINK_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "bpfmgr-${P_NAME}"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  # Exports: the entry point (and EXPORTS); everything else local.
  set(exports bpfmgr_plugin_entry ${P_EXPORTS})
  list(REMOVE_DUPLICATES exports)
  list(REMOVE_ITEM exports "")  # no EXPORTS: no empty entry in the script
  list(JOIN exports "; " exports)
  file(CONFIGURE OUTPUT "${gen}/exports.map"
       CONTENT "/* dynamic symbols of bpfmgr-${P_NAME}.so */\n{\n  global: ${exports};\n  local: *;\n};\n")
  target_link_options(${target} PRIVATE "LINKER:--version-script=${gen}/exports.map")
  if(BPFMGR_PLUGIN_STATIC_RUNTIME)
    target_link_options(${target} PRIVATE -static-libstdc++ -static-libgcc)
  endif()
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${gen}/exports.map")
  set_property(GLOBAL APPEND PROPERTY BPFMGR_PLUGIN_TARGETS ${target})
  if(NOT P_OUTPUT_DIRECTORY AND BPFMGR_PLUGIN_OUTPUT_DIR)
    set(P_OUTPUT_DIRECTORY "${BPFMGR_PLUGIN_OUTPUT_DIR}")
  endif()
  if(P_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES
      LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIRECTORY}")
  endif()
  # In tree, first-party plugins install into the binary's plugin dir
  # (BPFMGR_INSTALL_PLUGIN_DIR, relative to the prefix); out of tree, into
  # the installed bpfmgr's (BPFMGR_PLUGIN_INSTALL_DIR from the package
  # config, absolute; override it with -DBPFMGR_PLUGIN_INSTALL_DIR=...).
  if(NOT P_NO_INSTALL)
    if(BPFMGR_INSTALL_PLUGIN_DIR)
      install(TARGETS ${target} LIBRARY DESTINATION "${BPFMGR_INSTALL_PLUGIN_DIR}"
              COMPONENT runtime)
    elseif(BPFMGR_PLUGIN_INSTALL_DIR)
      install(TARGETS ${target} LIBRARY DESTINATION "${BPFMGR_PLUGIN_INSTALL_DIR}")
    endif()
  endif()
  set_property(TARGET ${target} PROPERTY BPFMGR_BPF_OBJECT "${obj}")
  if(P_BENCH)
    set(no_install)
    if(P_NO_INSTALL)
      set(no_install NO_INSTALL)
    endif()
    bpfmgr_add_bench(NAME ${P_NAME} SOURCES ${P_BENCH} PLUGIN ${P_NAME} ${no_install})
  endif()
endfunction()

# bpfmgr_add_bench(): a plugin's benchmark harness, an executable of its own
# (plugins carry no benchmark code), linked with Google Benchmark (Debian:
# libbenchmark-dev) and bpfmgr::bench (<bpfmgr/bench.hpp>: private pin
# root, loads through the real bpfmgr, cgroup, netns "hosts", bpf_stats,
# paired ratios).
#
#   bpfmgr_add_bench(NAME myplugin             # -> bench_myplugin
#                    SOURCES bench_myplugin.cpp
#                    [PLUGIN myplugin]         # a bpfmgr_add_plugin() NAME
#                    [LINK_LIBRARIES lib...]
#                    [NO_INSTALL])
#
# With PLUGIN the harness is built after that plugin and compiled with
# BPFMGR_BENCH_PLUGIN_DIR, the directory its .so is built in, to hand to
# bpfmgr::bench::LoadedManifest as plugin_path. Out of tree the harness
# installs into BPFMGR_BENCH_INSTALL_DIR (the installed bpfmgr's
# <prefix>/libexec/bpfmgr, from the package config), where
# `bpfmgr bench myplugin` finds it; in tree harnesses stay in build/bin,
# beside the bpfmgr that finds them there.
function(bpfmgr_add_bench)
  cmake_parse_arguments(B "NO_INSTALL" "NAME;PLUGIN" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT B_NAME OR NOT B_SOURCES)
    message(FATAL_ERROR "bpfmgr_add_bench: NAME and SOURCES are required")
  endif()
  if(NOT TARGET benchmark::benchmark)
    find_package(benchmark REQUIRED)
  endif()
  set(target bench_${B_NAME})
  add_executable(${target} ${B_SOURCES})
  target_link_libraries(${target} PRIVATE benchmark::benchmark bpfmgr::bench
                        ${B_LINK_LIBRARIES})
  target_compile_features(${target} PRIVATE cxx_std_20)
  if(B_PLUGIN)
    add_dependencies(${target} bpfmgr-plugin-${B_PLUGIN})
    target_compile_definitions(${target} PRIVATE
      BPFMGR_BENCH_PLUGIN_DIR="$<TARGET_FILE_DIR:bpfmgr-plugin-${B_PLUGIN}>")
  endif()
  # In tree the harness runs the bpfmgr being built.
  if(TARGET bpfmgr)
    add_dependencies(${target} bpfmgr)
  endif()
  if(NOT B_NO_INSTALL AND BPFMGR_BENCH_INSTALL_DIR)
    install(TARGETS ${target} RUNTIME DESTINATION "${BPFMGR_BENCH_INSTALL_DIR}")
  endif()
endfunction()
