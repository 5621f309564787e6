#!/usr/bin/env python3
"""bench smoke: runs `bench/run --smoke --build BUILD` against this build
and checks that every benchmark ran and produced numbers. Asserts nothing
about speed (never timing assertions in tests): only that the tables are
there and their measured cells are numbers.

    bench_smoke.py BUILD_DIR
"""
import os
import re
import subprocess
import sys
import tempfile


def fail(msg, out=""):
    print(out[-4000:])
    print("bench_smoke: FAIL: " + msg)
    sys.exit(1)


def table(text, heading):
    """Rows (lists of cells) of the first table after `## heading`."""
    m = re.search(r"^## " + re.escape(heading) + r"\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        return None
    rows = [l for l in m.group(1).splitlines() if l.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


NUM = re.compile(r"[0-9][0-9,]*(\.[0-9]+)?")


def main():
    root = os.environ.get("MCD_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")
    build = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        out_md = os.path.join(tmp, "RESULTS-smoke.md")
        env = dict(os.environ)
        # The daemon and tools are ASan builds here; a benchmark kills them
        # with SIGTERM, which is a normal exit; leaks are the unit tests' job.
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        p = subprocess.run(["bash", os.path.join(root, "bench", "run"), "--smoke",
                            "--build", build, "--out", out_md],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=280)
        log = p.stdout
        if p.returncode != 0:
            fail("bench/run --smoke exited %d" % p.returncode, log)
        text = open(out_md).read()
    print(text)

    ingest = table(text, "AMI ingest throughput")
    if not ingest:
        fail("no ingest table", log)
    got = {r[0]: r[1] for r in ingest}
    for k in ("missedcalld", "memchr"):
        if not NUM.fullmatch(got.get(k, "")):
            fail("ingest of %s is not a number: %r" % (k, got.get(k)), log)
    for k in ("yana", "ami-io", "asterisk-manager"):
        # peers need node + npm; when present they must have produced numbers
        if got.get(k) != "skipped" and not NUM.fullmatch(got.get(k, "")):
            fail("ingest of %s is neither a number nor skipped: %r" % (k, got.get(k)), log)

    mem = table(text, "Memory and scale")
    if not mem or len(mem) < 6:
        fail("memory/scale table missing or short", log)
    for name, val in mem:
        if not re.search(r"[0-9]", val):
            fail("memory/scale %r has no number: %r" % (name, val), log)

    lat = table(text, "End-to-end latency")
    if not lat:
        fail("no latency table", log)
    for r in lat:
        if r[2] != "0":
            fail("missed calls lost in the smoke run: %r" % r, log)
        if not re.match(r"[0-9.]+ / [0-9.]+ / [0-9.]+", r[3]):
            fail("latency cells are not numbers: %r" % r, log)

    targets = table(text, "Targets")
    if not targets or len(targets) < 8:
        fail("targets table missing or short", log)
    for r in targets:
        if r[2] not in ("pass", "FAIL", "n/a"):
            fail("target row without a verdict: %r" % r, log)
    print("bench_smoke: ok (%d ingest rows, %d memory rows, %d latency rows, %d targets)"
          % (len(ingest), len(mem), len(lat), len(targets)))


if __name__ == "__main__":
    main()
