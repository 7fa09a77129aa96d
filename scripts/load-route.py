#!/usr/bin/env python3
"""The load route as the kernel sees it, walked from cmd_load.

Loads MANIFEST into a scratch pin root under strace -k (the user-space stack
of every bpf() and rename call), unpins it again, and walks the union of
those stacks depth-first in the order the calls were made, keeping bpfmgr's
own frames (inlined ones included, through addr2line). A "stay" is a
maximal run of frames in one source file; a "return" is a stay in a file
the walk had already entered and left. Frames of a plugin (a memfd copy)
are not bpfmgr's and are skipped.

Needs root, strace built with stack tracing (Debian's is), addr2line, and
a build with debug info (RelWithDebInfo, as scripts/test.sh builds).

  scripts/load-route.py [--bpfmgr build/bin/bpfmgr] MANIFEST
  scripts/load-route.py --max-stays 10 --max-files 6 MANIFEST
      also exits 1 when the route has more stays or files than that, or any
      return (ctest LoadRoute.*)
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

OURS = ("core/src/", "core/include/", "plugins/")


def stacks_of(trace_path, binary):
    stacks, cur = [], None
    for line in open(trace_path):
        if re.match(r"^\d+\s+(bpf|rename)", line):
            cur = []
            stacks.append(cur)
            continue
        m = re.match(r"\s*> (\S+?)\(.*\) \[0x([0-9a-f]+)\]", line)
        if cur is not None and m and os.path.realpath(m.group(1)) == binary:
            cur.append(int(m.group(2), 16) - 1)  # the call, not the return address
    return stacks


def frames_of(addresses, binary, root):
    out = subprocess.run(["addr2line", "-e", binary, "-i", "-f", "-C", "-a"] +
                         [hex(a) for a in addresses],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    frames, addr, i = {}, None, 0
    while i < len(out):
        if out[i].startswith("0x"):
            addr = int(out[i], 16)
            frames[addr] = []
            i += 1
            continue
        # "ns::f(args)": the name without its parameters
        function = out[i].replace("(anonymous namespace)", "{anon}").split("(")[0]
        function, where = function.replace("{anon}", "(anonymous namespace)"), out[i + 1].split(":")[0]
        i += 2
        frames[addr].append((function, os.path.relpath(where, root)))
    return frames  # innermost inlined frame first


def walk(stacks, frames):
    seen, order = set(), []
    for stack in stacks:
        chain = []
        for addr in reversed(stack):  # outermost first
            chain += reversed(frames[addr])
        start = next((k for k, (f, _) in enumerate(chain) if f.endswith("cmd_load")), None)
        if start is None:
            continue
        path = ()
        for function, where in chain[start:]:
            if not where.startswith(OURS):
                continue
            path += ((function, where),)
            if path not in seen:
                seen.add(path)
                order.append((where, function))
    stays = []
    for where, function in order:
        if not stays or stays[-1][0] != where:
            stays.append((where, []))
        if function not in stays[-1][1]:
            stays[-1][1].append(function)
    return stays


def main():
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bpfmgr", default=os.path.join(root, "build/bin/bpfmgr"))
    ap.add_argument("--max-stays", type=int)
    ap.add_argument("--max-files", type=int)
    ap.add_argument("manifest")
    a = ap.parse_args()
    binary = os.path.realpath(a.bpfmgr)
    pin_root = "/sys/fs/bpf/bpfmgr-route-%d" % os.getpid()
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace")
        load = subprocess.run(["strace", "-f", "-k", "-e", "trace=bpf,rename,renameat,renameat2",
                               "-o", trace, binary, "load", a.manifest, "--pin-root", pin_root],
                              capture_output=True, text=True)
        subprocess.run([binary, "unpin", "--pin-root", pin_root, "--quiet"])
        if load.returncode != 0:
            sys.exit("bpfmgr load failed:\n" + load.stderr)
        stacks = stacks_of(trace, binary)
    frames = frames_of(sorted({a for s in stacks for a in s}), binary, root)
    entered, returns = set(), 0
    stays = walk(stacks, frames)
    for where, functions in stays:
        back = where in entered
        returns += back
        entered.add(where)
        names = ", ".join(f.replace("bpfmgr::", "") for f in functions)
        print("%-7s %s: %s" % ("return" if back else "", where, names))
    print("%d stays in %d files, %d returns" % (len(stays), len(entered), returns))
    if a.max_stays is not None or a.max_files is not None:
        if not stays:
            sys.exit("no bpfmgr frames in the stacks: a build without debug info?")
        if (a.max_stays is not None and len(stays) > a.max_stays) or \
                (a.max_files is not None and len(entered) > a.max_files) or returns:
            sys.exit("the route is longer than %s stays in %s files with no return" %
                     (a.max_stays, a.max_files))


if __name__ == "__main__":
    main()
