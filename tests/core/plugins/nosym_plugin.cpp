// A shared library that is not a bpfmgr plugin (no entry points).
extern "C" int bpfmgr_not_a_plugin() { return 42; }
