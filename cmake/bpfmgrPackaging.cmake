# The service files and the Debian packages (`cpack -G DEB` in the build
# directory): `bpfmgr` (binary, first-party plugins in
# /usr/lib/bpfmgr/plugins, systemd unit, /etc/bpfmgr/manifest.toml, docs) and
# `bpfmgr-dev` (the plugin SDK: headers, the header-only bench helper
# library and the CMake package).

# The unit and the manifest are placed at install time, for the prefix
# being installed to: cpack installs with prefix /usr (unit in
# /usr/lib/systemd/system, manifest in /etc), `cmake --install --prefix P`
# puts both under P. The unit names the binary by its installed path.
install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  if(prefix STREQUAL \"/usr\")
    set(BPFMGR_ETC_DIR /etc)
  else()
    set(BPFMGR_ETC_DIR \"\${prefix}/etc\")
  endif()
  set(BPFMGR_BIN_DIR \"\${prefix}/${CMAKE_INSTALL_BINDIR}\")
  set(BPFMGR_DOC_DIR \"\${prefix}/${CMAKE_INSTALL_DOCDIR}\")
  configure_file(\"${CMAKE_SOURCE_DIR}/deploy/systemd/bpfmgr.service.in\"
                 \"${CMAKE_BINARY_DIR}/install-time/bpfmgr.service\" @ONLY)
  file(INSTALL DESTINATION \"\${prefix}/lib/systemd/system\" TYPE FILE
       FILES \"${CMAKE_BINARY_DIR}/install-time/bpfmgr.service\")
  file(INSTALL DESTINATION \"\${BPFMGR_ETC_DIR}/bpfmgr\" TYPE FILE
       RENAME manifest.toml FILES \"${CMAKE_SOURCE_DIR}/deploy/bpfmgr.toml\")
" COMPONENT runtime)
install(FILES README.md docs/operations.md docs/manifest.md docs/pin-layout.md
        docs/safety.md deploy/debian/copyright
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)
install(FILES deploy/debian/copyright DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/bpfmgr-dev
        COMPONENT dev)

# Man pages and the Debian changelog, compressed as Debian wants them
# (gzip -n: no name or time stamp, so builds are reproducible).
set(BPFMGR_DEB_VERSION ${PROJECT_VERSION})
configure_file(deploy/debian/changelog.in ${CMAKE_BINARY_DIR}/debian-doc/changelog @ONLY)
set(_gz_outputs)
foreach(src IN ITEMS docs/man/bpfmgr.8 docs/man/bpfmgr.toml.5 BUILD:debian-doc/changelog)
  if(src MATCHES "^BUILD:(.*)")
    set(in ${CMAKE_BINARY_DIR}/${CMAKE_MATCH_1})
  else()
    set(in ${CMAKE_SOURCE_DIR}/${src})
  endif()
  get_filename_component(name ${in} NAME)
  set(out ${CMAKE_BINARY_DIR}/gz/${name}.gz)
  add_custom_command(OUTPUT ${out} COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/gz
                     COMMAND gzip -9nc ${in} > ${out} DEPENDS ${in} VERBATIM)
  list(APPEND _gz_outputs ${out})
endforeach()
add_custom_target(bpfmgr_compressed_docs ALL DEPENDS ${_gz_outputs})
install(FILES ${CMAKE_BINARY_DIR}/gz/bpfmgr.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8
        COMPONENT runtime)
install(FILES ${CMAKE_BINARY_DIR}/gz/bpfmgr.toml.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5
        COMPONENT runtime)
# A native package's changelog (the version has no Debian revision).
install(FILES ${CMAKE_BINARY_DIR}/gz/changelog.gz DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT runtime)
install(FILES ${CMAKE_BINARY_DIR}/gz/changelog.gz DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/bpfmgr-dev
        COMPONENT dev)
install(FILES docs/plugin-sdk.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT dev)

set(CPACK_PACKAGE_NAME bpfmgr)
set(CPACK_PACKAGE_VENDOR "bpfmgr")
set(CPACK_PACKAGE_CONTACT "bpfmgr maintainers <bpfmgr-maintainers@lists.bpfmgr.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "plugin-based BPF program manager")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
# Absolute destinations (the manifest in /etc) need DESTDIR-style staging.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Runtime libraries found by dpkg-shlibdeps (libbpf1, libelf1, ...).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME bpfmgr)
# CPack takes a component's description from CPACK_COMPONENT_<C>_DESCRIPTION:
# CPack 3.25 puts the package summary first (the synopsis), then this text:
# the extended description only (a repeated synopsis is a lintian error).
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
    "bpfmgr loads BPF plugins named in a TOML manifest, pins them under\n/sys/fs/bpf and keeps them running (bpfmgr serve, bpfmgr.service),\nrepairing drift as it happens, with Prometheus metrics and readiness.\nThe service is not enabled on install: edit /etc/bpfmgr/manifest.toml,\nthen systemctl enable --now bpfmgr.")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DESCRIPTION ${CPACK_COMPONENT_RUNTIME_DESCRIPTION})
set(CPACK_DEBIAN_DEV_PACKAGE_NAME bpfmgr-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_ARCHITECTURE all)
# What find_package(bpfmgr) and bpfmgr_add_plugin() use: libbpf through
# pkg-config, clang for the BPF object, bpftool for vmlinux.h and the
# skeleton. Plugins link neither Boost nor spdlog (API 2).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "bpfmgr (= ${PROJECT_VERSION}), libbpf-dev, pkg-config, cmake (>= 3.20), clang, bpftool")
# bpfmgr_add_bench() and <bpfmgr/bench/ratio_reporter.hpp> need Google
# Benchmark; plugins alone do not.
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "libbenchmark-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "Headers and the CMake package (find_package(bpfmgr)) to build bpfmgr\nplugins out of tree, and the bench helper library (bpfmgr::bench) for\ntheir benchmark harnesses.")
set(CPACK_DEBIAN_DEV_PACKAGE_DESCRIPTION ${CPACK_COMPONENT_DEV_DESCRIPTION})
# The shipped manifest is the administrator's to edit: dpkg keeps their
# changes on upgrade and removes it on purge.
file(WRITE ${CMAKE_BINARY_DIR}/debian-runtime/conffiles "/etc/bpfmgr/manifest.toml\n")
# Maintainer scripts: daemon-reload, try-restart on upgrade, stop on removal;
# never enable or start (deploy/debian/postinst).
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/debian-runtime/conffiles
    ${CMAKE_SOURCE_DIR}/deploy/debian/postinst ${CMAKE_SOURCE_DIR}/deploy/debian/prerm
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
