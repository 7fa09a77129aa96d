/* A library a test plugin (`testdep`) needs (DT_NEEDED), found through the
 * plugin's RUNPATH. Its constructor leaves a line in
 * $BPFMGR_TEST_DEP_MARKER: the trust tests prove with it that a dependency
 * in a directory others can write is never loaded. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void leave_marker(void) {
  const char* path = getenv("BPFMGR_TEST_DEP_MARKER");
  if (!path) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  (void)!write(fd, "dep ran\n", 8);
  close(fd);
}

int bpfmgr_testdep_value(void) { return 42; }
