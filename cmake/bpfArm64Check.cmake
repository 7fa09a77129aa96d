# Compiles every BPF program of the tree for arm64 (cmake -P, run by the
# ctest `bpf_arm64_compile`); nothing is loaded, this machine is x86-64.
#
#   cmake -DCLANG=... -DSOURCE_DIR=... -DVMLINUX_H=<host vmlinux.h>
#         -DWORK_DIR=... -DWARNINGS="<BPFMGR_BPF_WARNINGS>" -P bpfArm64Check.cmake
#
# The arm64 vmlinux.h is the host's (generated from /sys/kernel/btf/vmlinux
# at build time) with the register structs swapped for arm64's layout
# (arch/arm64/include/asm/ptrace.h and uapi/asm/ptrace.h). That is what
# CO-RE needs at compile time: every other kernel type is relocated by
# field name against the target kernel's BTF at load, so only the types
# whose *names* differ per architecture (pt_regs members, user_pt_regs)
# must match arm64. A leftover x86 register name (regs->di) or a hard-coded
# x86 syscall number in an arch-neutral place fails this check.
foreach(v CLANG SOURCE_DIR VMLINUX_H WORK_DIR)
  if(NOT ${v})
    message(FATAL_ERROR "bpfArm64Check: ${v} is not set")
  endif()
endforeach()

file(READ "${VMLINUX_H}" host)
string(FIND "${host}" "struct pt_regs {\n" begin)
if(begin EQUAL -1)
  message(FATAL_ERROR "no 'struct pt_regs {' in ${VMLINUX_H}")
endif()
string(SUBSTRING "${host}" ${begin} -1 tail)
string(FIND "${tail}" "\n};\n" body_end)
math(EXPR after "${begin} + ${body_end} + 4")
string(SUBSTRING "${host}" 0 ${begin} head)
string(SUBSTRING "${host}" ${after} -1 rest)
set(arm64_regs [=[
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};

struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			u64 regs[31];
			u64 sp;
			u64 pc;
			u64 pstate;
		};
	};
	u64 orig_x0;
	s32 syscallno;
	u32 pmr;
	u64 sdei_ttbr1;
	u64 stackframe[3];
	u64 lockdep_hardirqs;
	u64 exit_rcu;
};
]=])
string(REPLACE "typedef struct pt_regs bpf_user_pt_regs_t;"
       "typedef struct user_pt_regs bpf_user_pt_regs_t;" rest "${rest}")
file(MAKE_DIRECTORY "${WORK_DIR}/include")
file(WRITE "${WORK_DIR}/include/vmlinux.h" "${head}${arm64_regs}${rest}")

file(GLOB_RECURSE sources
     "${SOURCE_DIR}/plugins/*.bpf.c" "${SOURCE_DIR}/tests/*.bpf.c"
     "${SOURCE_DIR}/examples/*.bpf.c")
file(GLOB plugin_dirs LIST_DIRECTORIES true "${SOURCE_DIR}/plugins/*")
set(includes -I${WORK_DIR}/include -I${SOURCE_DIR}/bpf/include)
foreach(d IN LISTS plugin_dirs)
  if(IS_DIRECTORY "${d}")
    list(APPEND includes -I${d})
  endif()
endforeach()

set(failed "")
list(LENGTH sources n)
if(n EQUAL 0)
  message(FATAL_ERROR "no .bpf.c files under ${SOURCE_DIR}")
endif()
foreach(src IN LISTS sources)
  get_filename_component(name "${src}" NAME_WE)
  get_filename_component(dir "${src}" DIRECTORY)
  execute_process(
    COMMAND "${CLANG}" -O2 -g -target bpf -D__TARGET_ARCH_arm64 ${WARNINGS}
            -I${dir} ${includes} -c "${src}" -o "${WORK_DIR}/${name}.arm64.bpf.o"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  file(RELATIVE_PATH rel "${SOURCE_DIR}" "${src}")
  if(rc EQUAL 0)
    message(STATUS "arm64 ok: ${rel}")
  else()
    message(STATUS "arm64 FAILED: ${rel}\n${out}")
    list(APPEND failed "${rel}")
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "BPF objects that do not build for arm64: ${failed}")
endif()
message(STATUS "${n} BPF objects build for arm64")
