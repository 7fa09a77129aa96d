// Linked into the `testmarker` plugin: leaves a line in $BPFMGR_TEST_MARKER
// as soon as the library is loaded, before bpfmgr can call anything in it.
// The trust tests use it to prove that a refused plugin's code never ran.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

__attribute__((constructor)) static void leave_marker() {
  const char* path = std::getenv("BPFMGR_TEST_MARKER");
  if (!path) return;
  int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  (void)!::write(fd, "ran\n", 4);
  ::close(fd);
}
