#!/usr/bin/env python3
"""Results of kernel-matrix runs: per-test lists, the expected-failure check,
and the markdown tables of docs/kernels.md.

  matrix.py summary RESULTS_DIR                 per-test list (from junit.xml + loads.tsv)
  matrix.py check RESULTS_DIR EXPECTED_FILE     exit 1 on failures not listed as expected
  matrix.py table RESULTS_DIR...                markdown tables, one column per kernel
  matrix.py docs DOC.md RESULTS_DIR...          the same, written between DOC.md's
                                                <!-- matrix:begin --> and <!-- matrix:end -->

A RESULTS_DIR is what run-suite.sh leaves in BUILD/kernel-matrix/KERNEL:
junit.xml (ctest --output-junit), loads.tsv, kernel-release, timing, meta.
"""
import os
import re
import sys

SPECIFIC = [
    r"failed to resolve CO-RE relocation .*",
    r"extern \(func ksym\) .*",
    r"unknown func \S+",
    r"program of this type cannot use helper \S+",
    r"helper call is not allowed in probe",
    r"calling kernel function \S+ is not allowed",
    r"R\d+ type=\S+ expected=.*",
    r"invalid (?:access|mem access|bpf_context access).*",
]
import xml.etree.ElementTree as ET


def read_kv(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def tests(results):
    """{test name: (status, seconds, first failure line)} from ctest's JUnit."""
    path = os.path.join(results, "junit.xml")
    if not os.path.exists(path):
        return {}
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        status = case.get("status") or "run"
        if case.find("failure") is not None or case.find("error") is not None:
            status = "fail"
        elif case.find("skipped") is not None or status in ("notrun", "disabled"):
            status = "skip"
        else:
            status = "pass"
        why = ""
        if status == "fail":
            text = (case.findtext("system-out") or "")
            lines = [l.strip() for l in text.splitlines()
                     if "Failure" in l or "error" in l.lower() or "Timeout" in l]
            why = lines[0][:200] if lines else ""
        out[name] = (status, float(case.get("time") or 0), why)
    return out


def load_reason(results, name, fallback):
    """The most specific line of bpfmgr's error: its first detail line (the
    libbpf or verifier message under "error: ..."); for an option validate
    refused, the feature it needs."""
    path = os.path.join(results, f"load-{name}.log")
    if not os.path.exists(path):
        return fallback
    lines = open(path, errors="replace").read().splitlines()
    for l in lines:
        m = re.search(r"needs (.*?); this kernel is", l)
        if m:
            return "needs " + m.group(1)
    # The verifier's and libbpf's own words for what a kernel lacks, first.
    for pat in SPECIFIC:
        for l in lines:
            m = re.search(pat, l)
            if m:
                return m.group(0).strip()
    for i, l in enumerate(lines):
        if l.startswith("error:"):
            for d in lines[i + 1:]:
                if d.startswith(" ") and d.strip():
                    return d.strip().removeprefix("libbpf: ")
            return l
    return fallback


def refused_by_validate(results, name):
    """Whether validate refused the load for a kernel feature (its words:
    "... needs X (Linux N+); this kernel is R") before anything was loaded."""
    path = os.path.join(results, f"load-{name}.log")
    return os.path.exists(path) and "; this kernel is " in open(path, errors="replace").read()


def loads(results):
    """{plugin--option: (ok|fail, seconds, reason)} from loads.tsv."""
    path = os.path.join(results, "loads.tsv")
    out = {}
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 3:
                why = f[3] if len(f) > 3 else ""
                verdict = f[1]
                if verdict != "ok":
                    why = load_reason(results, f[0], why)
                    # Runs before guest-suite.sh said "refused" itself.
                    if verdict == "fail" and refused_by_validate(results, f[0]):
                        verdict = "refused"
                out[f[0]] = (verdict, f[2], why)
    return out


def summary(results):
    t = tests(results)
    l = loads(results)
    meta = read_kv(os.path.join(results, "meta"))
    print(f"kernel {meta.get('release', '?')}: "
          f"{sum(1 for s in t.values() if s[0] == 'pass')}/{len(t)} tests pass, "
          f"{sum(1 for s in l.values() if s[0] == 'ok')}/{len(l)} plugin options load")
    for name, (st, secs, why) in sorted(t.items()):
        print(f"  {st.upper():4} {name} ({secs:.0f}s){'  ' + why if why else ''}")
    for name, (st, secs, why) in sorted(l.items()):
        tag = {"ok": "LOAD", "refused": "RFSD"}.get(st, "NOLD")
        print(f"  {tag} {name} ({secs}s){'  ' + why if why else ''}")


def failures(results):
    f = {n for n, s in tests(results).items() if s[0] == "fail"}
    # "refused": validate named the kernel feature the option needs before
    # anything was loaded (the requirement check working), not a failure.
    f |= {"load:" + n for n, s in loads(results).items() if s[0] not in ("ok", "refused")}
    return f


def check(results, expected_file):
    expected = set()
    if os.path.exists(expected_file):
        for line in open(expected_file):
            line = line.split("#", 1)[0].strip()
            if line:
                expected.add(line)
    if not tests(results):
        print("no test results (the guest did not finish ctest)")
        return 1
    got = failures(results)
    new = sorted(got - expected)
    fixed = sorted(n for n in expected - got
                   if (n[5:] in loads(results) if n.startswith("load:") else n in tests(results)))
    for n in new:
        print(f"UNEXPECTED FAILURE: {n}")
    for n in fixed:
        print(f"now passing (drop it from {os.path.relpath(expected_file)}): {n}")
    print(f"{len(got)} failures, {len(got & expected)} of them expected, {len(new)} unexpected")
    return 1 if new else 0


# Which plugin a test exercises, by its gtest suite name.
SUITE_PLUGIN = {
    "Loader": "core (loader)", "Cli": "core (loader)", "ExampleManifest": "all (example manifest)",
    "Bypass": "sockops + sockmsg", "BlockingEcho": "sockops + sockmsg",
    "Tcpint": "tcpint", "TcpintOptions": "tcpint",
    "Probes": "probes", "ProbesFormat": "probes",
}


def cell_test(st):
    return {"pass": "pass", "fail": "**FAIL**", "skip": "skip"}.get(st, st)


def table(dirs):
    print(render(dirs))


def docs(doc, dirs):
    text = open(doc).read()
    begin, end = "<!-- matrix:begin -->", "<!-- matrix:end -->"
    if begin not in text or end not in text:
        print(f"{doc}: no {begin} ... {end}", file=sys.stderr)
        return 1
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w") as f:
        f.write(head + begin + "\n" + render(dirs) + "\n" + end + tail)
    return 0


def render(dirs):
    runs = []
    for d in dirs:
        meta = read_kv(os.path.join(d, "meta"))
        runs.append((meta.get("kernel", os.path.basename(d.rstrip("/"))),
                     meta.get("release", "?"), d, meta))
    out = []
    hdr = "| plugin | option | " + " | ".join(f"{k} ({r})" for k, r, _, _ in runs) + " |"
    sep = "|---|---|" + "---|" * len(runs)
    out += ["### Plugin options: a real load + unpin in each kernel", "", hdr, sep]
    names = sorted({n for _, _, d, _ in runs for n in loads(d)})
    for n in names:
        plugin, _, option = n.partition("--")
        cells = []
        for _, _, d, _ in runs:
            st = loads(d).get(n)
            if st is None:
                cells.append("-")
            elif st[0] == "ok":
                cells.append("loads")
            elif st[0] == "refused":
                why = st[2].replace("|", "\\|")[:140]
                cells.append(f"refused by validate: {why}")
            else:
                why = st[2].replace("|", "\\|")[:140]
                cells.append(f"**no**: {why}" if why else "**no**")
        out.append(f"| {plugin} | {option} | " + " | ".join(cells) + " |")
    out += ["", "### Tests labelled `kernel`, per kernel", "",
            "| plugin | test | " + " | ".join(k for k, _, _, _ in runs) + " |",
            "|---|---|" + "---|" * len(runs)]
    names = sorted({n for _, _, d, _ in runs for n in tests(d)},
                   key=lambda n: (SUITE_PLUGIN.get(n.split(".")[0], "zz"), n))
    for n in names:
        plugin = SUITE_PLUGIN.get(n.split(".")[0], "?")
        cells = []
        for _, _, d, _ in runs:
            st = tests(d).get(n)
            cells.append("-" if st is None else cell_test(st[0]))
        out.append(f"| {plugin} | `{n}` | " + " | ".join(cells) + " |")
    out += ["", "| kernel | tests passed / failed / skipped | options loading (refused by validate) | boot | loads | ctest | guest total |",
            "|---|---|---|---|---|---|---|"]
    for k, r, d, meta in runs:
        t, l = tests(d), loads(d)
        tm = read_kv(os.path.join(d, "timing"))
        # The guest's own time (from the boot to its power-off), without a
        # wait for another guest's lock.
        guest = read_kv(os.path.join(d, "guest-timing")).get("run_s", meta.get("guest_s", "?"))
        count = lambda st: sum(1 for s in t.values() if s[0] == st)
        out.append(f"| {k} ({r}) | {count('pass')} / {count('fail')} / {count('skip')} of {len(t)} | "
                   f"{sum(1 for s in l.values() if s[0] == 'ok')}/{len(l)} "
                   f"({sum(1 for s in l.values() if s[0] == 'refused')}) | "
                   f"{meta.get('boot_s', '?')} s | {tm.get('loads_s', '?')} s | "
                   f"{tm.get('ctest_s', '?')} s | {guest} s |")
    commits = {m.get("commit", "?") for _, _, _, m in runs}
    dates = sorted({m.get("date", "?") for _, _, _, m in runs})
    out += ["", f"Generated by `scripts/kernel-matrix/matrix.py table` from runs of commit "
            f"{', '.join(sorted(commits))} on {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") + "."]
    return "\n".join(out)


def main(argv):
    if len(argv) >= 2 and argv[0] == "summary":
        summary(argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "check":
        return check(argv[1], argv[2])
    if len(argv) >= 3 and argv[0] == "docs":
        return docs(argv[1], argv[2:])
    if len(argv) >= 2 and argv[0] == "table":
        table(argv[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
