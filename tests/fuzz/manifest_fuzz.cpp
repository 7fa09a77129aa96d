// libFuzzer target: the manifest parser and resolver (scripts/fuzz.sh
// builds it with clang and runs it; docs/safety.md has the numbers).
#include "manifest_fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bpfmgr::fuzz::run_manifest_input(data, size);
  return 0;
}
