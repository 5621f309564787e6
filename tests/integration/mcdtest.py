"""Plumbing the Python integration tests share, so each test file holds
only its checks: a scratch directory with the processes a test started and
their teardown, free loopback ports, the AMI scenario table, and starting
the fake AMI server (amisim). Test scripts import it from their own folder.
"""
import os
import socket
import subprocess
import sys
import tempfile

SRC = os.environ.get("MCD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
AMI_DATA = os.path.join(SRC, "tests", "data", "ami")


class Scratch:
    """A temporary directory and the processes started for one test run.

    cleanup() runs the registered hooks (e.g. stopping a PostgreSQL
    cluster), kills every process still running and removes the directory;
    fail() reports, cleans up and exits 1.
    """

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.procs = []
        self.hooks = []

    def spawn(self, argv, **kwargs):
        p = subprocess.Popen(argv, **kwargs)
        self.procs.append(p)
        return p

    def cleanup(self):
        for hook in self.hooks:
            hook()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.call(["rm", "-rf", self.dir])

    def fail(self, msg):
        print("FAIL:", msg, flush=True)
        self.cleanup()
        sys.exit(1)


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_ami_expected():
    """tests/data/ami/expected.tsv as a list of dicts ('#' lines skipped)."""
    rows, header = [], None
    with open(os.path.join(AMI_DATA, "expected.tsv")) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if header is None:
                header = cols
                continue
            rows.append(dict(zip(header, cols)))
    return rows


def start_amisim(scratch, amisim, args, secret, user="admin"):
    """Starts amisim with args (which choose the port, e.g. -p 0) and
    returns (process, port) once it printed PORT=N."""
    p = scratch.spawn([amisim, "-u", user, "-s", secret] + args,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("PORT="):
        scratch.fail("amisim did not print PORT= (%r, %s)" % (line, p.stderr.read()))
    return p, int(line.strip()[5:])
