#!/usr/bin/env python3
"""The real binary under a fake service manager.

The test owns the sd_notify datagram socket (NOTIFY_SOCKET) and checks what
systemd would see: READY=1 without waiting for the PBX or the database (both
point at closed ports), STATUS=, WATCHDOG=1 at about half WATCHDOG_USEC,
RELOADING=1 with MONOTONIC_USEC on SIGHUP, a broken new config kept out and
reported in STATUS=, a good one applied, STOPPING=1 and exit 0 on SIGTERM.
A second run is socket-activated (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES): the
socket named "widget" is taken by the widget module and answers HTTP, one
with an unknown name is closed with a warning.

Usage: foundation_lifecycle.py BINARY   (stdlib only; bounded in time)
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
DEADLINE = 30.0  # seconds any single wait may take (ASan builds are slow)


from mcdtest import free_port  # noqa: E402


def config_text(log_level, extra=""):
    # Database and PBX both point at ports nobody listens on: READY=1 must
    # not depend on them.
    return f"""
daemon = {{ log_level = "{log_level}"; state_dir = "{TMP}/state"; stop_timeout = 5; }};
database = {{ conninfo = "hostaddr=127.0.0.1 port={free_port()} dbname=none user=none"; }};
pbx = (
  {{ name = "lab"; type = "hep"; listen = ["udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]; }}
);
widget = {{ listen = "127.0.0.1:{free_port()}"; }};
{extra}
"""


class Notify:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path
        self.proc = None  # the daemon, once started
        self.messages = []  # (monotonic time, {key: value})

    def _recv(self, timeout):
        # short slices so a daemon that died is noticed at once
        timeout = min(timeout, 0.5)
        if self.proc is not None and self.proc.p.poll() is not None:
            self.sock.settimeout(0)
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, socket.timeout):
                fail(f"daemon exited with status {self.proc.p.returncode}")
            return self._parse(data)
        self.sock.settimeout(timeout)
        return self._parse(self.sock.recv(4096))

    def _parse(self, data):
        data = data.decode()
        fields = {}
        for line in data.split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, pred, what):
        """Returns the first message from now on matching pred."""
        end = time.monotonic() + DEADLINE
        while True:
            left = end - time.monotonic()
            if left <= 0:
                fail(f"timed out waiting for {what}")
            try:
                m = self._recv(left)
            except socket.timeout:
                continue
            if pred(m):
                return m

    def collect_until(self, pred, what):
        """All messages up to and including the first matching pred."""
        got = []
        end = time.monotonic() + DEADLINE
        while True:
            left = end - time.monotonic()
            if left <= 0:
                fail(f"timed out waiting for {what}")
            try:
                m = self._recv(left)
            except socket.timeout:
                continue
            got.append(m)
            if pred(m):
                return got


class Proc:
    """The daemon with its stderr read line by line on a thread."""

    def __init__(self, argv, env, pass_fds=(), preexec_fn=None):
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, pass_fds=pass_fds,
                                  preexec_fn=preexec_fn, text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stderr:
            sys.stderr.write("  daemon: " + line)
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF
            self.cond.notify_all()

    def wait_line(self, *parts):
        """Waits for a stderr line containing every part; returns it."""
        end = time.monotonic() + DEADLINE
        with self.cond:
            i = 0
            while True:
                while i < len(self.lines):
                    line = self.lines[i]
                    i += 1
                    if line is None:
                        fail(f"daemon exited before logging {parts}")
                    if all(p in line for p in parts):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    fail(f"timed out waiting for log line with {parts}")
                self.cond.wait(left)

    def has_line(self, *parts):
        with self.cond:
            return any(l is not None and all(p in l for p in parts)
                       for l in self.lines)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


PROCS = []


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(1)


def cleanup():
    for p in PROCS:
        p.kill()
    shutil.rmtree(TMP, ignore_errors=True)


def base_env(notify_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LISTEN_", "WATCHDOG_", "NOTIFY_",
                                "JOURNAL_STREAM", "CREDENTIALS_"))}
    env["NOTIFY_SOCKET"] = notify_path
    return env


def test_lifecycle():
    conf = os.path.join(TMP, "missedcalld.conf")
    with open(conf, "w") as f:
        f.write(config_text("info"))
    notify = Notify(os.path.join(TMP, "notify.sock"))
    env = base_env(notify.path)
    env["WATCHDOG_USEC"] = "400000"  # pings expected every 200 ms
    proc = Proc([BIN, "-c", conf], env)
    PROCS.append(proc)
    notify.proc = proc

    notify.wait_for(lambda m: m.get("READY") == "1", "READY=1")
    status = notify.wait_for(lambda m: "STATUS" in m, "STATUS=")
    print(f"ok: READY=1, STATUS={status['STATUS']!r}")
    if "1 pbx" not in status["STATUS"] and "lab" not in status["STATUS"]:
        fail(f"STATUS does not mention the pbx: {status['STATUS']!r}")

    # Watchdog: count pings over a window measured from the pings
    # themselves; the cadence is 200 ms, the accepted range is wide.
    notify.wait_for(lambda m: m.get("WATCHDOG") == "1", "WATCHDOG=1")
    t0 = notify.messages[-1][0]
    count = 0
    while notify.messages[-1][0] - t0 < 2.0:
        notify.wait_for(lambda m: m.get("WATCHDOG") == "1", "WATCHDOG=1")
        count += 1
    elapsed = notify.messages[-1][0] - t0
    print(f"ok: {count} WATCHDOG=1 in {elapsed:.2f} s (expected ~{elapsed / 0.2:.0f})")
    if not (3 <= count <= 40):
        fail(f"watchdog cadence off: {count} pings in {elapsed:.2f} s")

    # A broken configuration: kept out, every problem logged, STATUS says so.
    broken = config_text("debug", "bogus_section = { x = 1; };\n"
                                  "daemon_typo = 1;\n")
    lines = broken.split("\n")
    bogus_line = lines.index("bogus_section = { x = 1; };") + 1
    with open(conf, "w") as f:
        f.write(broken)
    proc.p.send_signal(signal.SIGHUP)
    rel = notify.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
    if not rel.get("MONOTONIC_USEC", "").isdigit():
        fail(f"RELOADING=1 without MONOTONIC_USEC: {rel}")
    msgs = notify.collect_until(lambda m: m.get("READY") == "1",
                                "READY=1 after the failed reload")
    st = [m["STATUS"] for m in msgs if "STATUS" in m]
    st = st[-1] if st else notify.wait_for(lambda m: "STATUS" in m,
                                            "STATUS= after reload")["STATUS"]
    if "reload failed" not in st or "bogus_section" not in st:
        fail(f"STATUS does not report the failed reload: {st!r}")
    proc.wait_line(f"missedcalld.conf:{bogus_line}: bogus_section: unknown key")
    proc.wait_line(f"missedcalld.conf:{bogus_line + 1}: daemon_typo: unknown key")
    proc.wait_line("reload failed (2 problems)")
    print(f"ok: broken reload refused, STATUS={st!r}")
    if proc.has_line("configuration reloaded"):
        fail("a broken configuration was applied")

    # A good configuration: applied (log level debug becomes visible).
    with open(conf, "w") as f:
        f.write(config_text("debug"))
    proc.p.send_signal(signal.SIGHUP)
    notify.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1 (2)")
    notify.wait_for(lambda m: m.get("READY") == "1", "READY=1 after reload")
    proc.wait_line("configuration reloaded (log level debug)")
    st = notify.wait_for(lambda m: "STATUS" in m, "STATUS= after good reload")
    if "reload failed" in st["STATUS"]:
        fail(f"STATUS still reports the old failure: {st['STATUS']!r}")
    print(f"ok: good reload applied, STATUS={st['STATUS']!r}")

    # Graceful stop.
    proc.p.send_signal(signal.SIGTERM)
    notify.wait_for(lambda m: m.get("STOPPING") == "1", "STOPPING=1")
    # debug level from the reload shows the state machine
    proc.wait_line("daemon: running -> stopping")
    try:
        rc = proc.p.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        fail("daemon did not exit after SIGTERM")
    if rc != 0:
        fail(f"exit status {rc} after SIGTERM, expected 0")
    print("ok: STOPPING=1, exit 0")


def test_socket_activation():
    conf = os.path.join(TMP, "sa.conf")
    with open(conf, "w") as f:
        f.write(config_text("debug"))
    notify_path = os.path.join(TMP, "notify2.sock")
    notify = Notify(notify_path)
    widget = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    widget.bind(("127.0.0.1", 0))
    widget.listen(16)
    bogus = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bogus.bind(("127.0.0.1", 0))
    bogus.listen(16)
    # fds 3 and 4 in the child, as systemd passes them; LISTEN_PID must be
    # the daemon's own pid, so a shell sets it and execs the daemon.
    env = base_env(notify_path)
    env["LISTEN_FDS"] = "2"
    env["LISTEN_FDNAMES"] = "widget:bogus"
    w_fd, b_fd = widget.fileno(), bogus.fileno()

    def place_fds():
        # via fds above any we could clobber, then to 3 and 4
        hw, hb = os.dup(w_fd) + 100, os.dup(b_fd) + 100
        os.dup2(w_fd, hw)
        os.dup2(b_fd, hb)
        os.dup2(hw, 3)
        os.dup2(hb, 4)
        os.close(hw)
        os.close(hb)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    proc = Proc(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" -c "$1"', BIN, conf],
                env, pass_fds=(3, 4), preexec_fn=place_fds)
    PROCS.append(proc)
    notify.proc = proc
    notify.wait_for(lambda m: m.get("READY") == "1", "READY=1 (socket activation)")
    proc.wait_line('socket activation: received fd 3 named "widget"')
    proc.wait_line('socket activation: received fd 4 named "bogus"')
    # Nothing takes "bogus": closed with a warning naming it.
    proc.wait_line('no module uses the socket named "bogus"')
    # "widget" is taken by name by the widget module, which then serves
    # HTTP on the socket the test created (its own port, not the config's).
    proc.wait_line('socket activation: fd 3 "widget" taken')
    if proc.has_line('no module uses the socket named "widget"'):
        fail("the widget socket was closed instead of used")
    with socket.create_connection(widget.getsockname(), timeout=DEADLINE) as c:
        c.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        reply = c.recv(64)
    if not reply.startswith(b"HTTP/1."):
        fail(f"no HTTP answer on the passed widget socket: {reply!r}")
    print(f"ok: socket activation by name; widget answers on the passed socket ({reply[:12]!r})")
    # SIGINT (Ctrl-C by hand) stops as gracefully as SIGTERM.
    proc.p.send_signal(signal.SIGINT)
    notify.wait_for(lambda m: m.get("STOPPING") == "1", "STOPPING=1 (SIGINT)")
    proc.wait_line("SIGINT: stopping")
    if proc.p.wait(timeout=DEADLINE) != 0:
        fail("daemon did not exit 0 after SIGINT")
    print("ok: SIGINT, STOPPING=1, exit 0")
    widget.close()
    bogus.close()


TMP = tempfile.mkdtemp(prefix="mcd-lifecycle-")
try:
    os.mkdir(os.path.join(TMP, "state"))
    test_lifecycle()
    test_socket_activation()
finally:
    cleanup()
print("PASS")
