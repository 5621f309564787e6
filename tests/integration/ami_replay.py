#!/usr/bin/env python3
"""Integration test: the real missedcalld binary against amisim (the fake
AMI server) replaying the scenario transcripts of tests/data/ami.

Usage: ami_replay.py MISSEDCALLD AMISIM

1. scenarios: every transcript listed in tests/data/ami/expected.tsv is
   replayed in one AMI session; the daemon's decision for each inbound call
   (verdict, reason, answered-by, caller) must match the table, internal and
   outbound calls must never produce an inbound outcome. The raw stream is
   recorded (record_dir) and the capture must hold it. The secret never
   appears in the log.
2. login failure: a wrong secret gives one clear log line with the
   server's message and a retry, and the daemon keeps running.
3. reconnect: the AMI server goes away mid-session; the daemon logs the
   loss, retries with backoff, logs in again to a new server on the same
   port and decides the calls replayed there.
4. oversized: a 20 KB message against max_message_size = 8192 is dropped
   with one error line; the call around it is still decided correctly.
5. half-open: the AMI server is frozen (SIGSTOP, TCP stays up); two
   unanswered pings declare the connection dead.
6. resync gap: a call in progress when the connection drops and absent
   from CoreShowChannels after the reconnect is reported as unknown with
   the gap flag.

Outcomes are read from the daemon's log (stderr, log_level debug): the
call tracker logs `inbound call KEY: VERDICT (REASON)[ by EXT]` with the
context [pbx=… call=… phone=…].
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import mcdtest
from mcdtest import free_port

MISSEDCALLD, AMISIM = sys.argv[1], sys.argv[2]
SRC = os.environ.get("MCD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(SRC, "tests", "data", "ami")
SCRATCH = mcdtest.Scratch("ami_replay.")
TMP = SCRATCH.dir
SECRET = "Zq9-integration-s3cret"
PROCS = SCRATCH.procs

OUTCOME_RE = re.compile(
    r"\[pbx=(?P<pbx>\S+) call=(?P<ctxcall>\S+)(?: phone=(?P<phone>[^\]\s]+))?\] "
    r"inbound call (?P<key>\S+): (?P<verdict>\w+) \((?P<reason>\w+)\)"
    r"(?: by (?P<by>[^,\s]+))?(?P<gap>, ended while)?")


cleanup = SCRATCH.cleanup
fail = SCRATCH.fail


def amisim(args, secret=SECRET):
    return mcdtest.start_amisim(SCRATCH, AMISIM, args, secret)


class Daemon:
    """missedcalld in the foreground; its stderr collected line by line."""

    def __init__(self, name, ports, extra="ping_interval = 2;"):
        self.dir = os.path.join(TMP, name)
        os.makedirs(os.path.join(self.dir, "state"))
        secret = os.path.join(self.dir, "ami.secret")
        with open(secret, "w") as f:
            f.write(SECRET + "\n")
        self.record = os.path.join(self.dir, "record")
        conf = os.path.join(self.dir, "missedcalld.conf")
        if isinstance(ports, int):
            ports = [("office", ports)]
        entries = ",\n".join("""  {{
    name = "{name}"; type = "ami"; host = "127.0.0.1"; port = {port};
    username = "admin"; secret_file = "{secret}";
    trunks = [ "PJSIP/provider" ]; inbound_contexts = [ "from-pstn" ];
    record_dir = "{record}"; {extra}
  }}""".format(name=n, port=p, secret=secret, record=self.record, extra=extra)
                              for n, p in ports)
        with open(conf, "w") as f:
            f.write("""
daemon = {{ log_level = "debug"; state_dir = "{state}"; }};
database = {{ conninfo = "hostaddr=127.0.0.1 port={dbport} dbname=none user=none"; }};
calls = {{ decide_grace_ms = 200; }};
widget = {{ listen = "127.0.0.1:{wport}"; }};
pbx = (
{entries}
);
""".format(state=os.path.join(self.dir, "state"), dbport=free_port(),
           wport=free_port(), entries=entries))
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        self.lines = []
        self.cv = threading.Condition()
        self.p = subprocess.Popen([MISSEDCALLD, "-c", conf],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True,
                                  errors="replace", env=env)
        PROCS.append(self.p)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stderr:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait(self, pred, what, timeout=60):
        """Waits until pred(lines) holds (re-checked on every new line)."""
        end = time.monotonic() + timeout
        with self.cv:
            while not pred(self.lines):
                left = end - time.monotonic()
                exited = self.p.poll() is not None and not self.t.is_alive()
                if left <= 0 or exited:
                    fail("%s: not seen (%s); daemon log tail:\n%s" %
                         (what, "daemon exited %s" % self.p.returncode
                          if exited else "%d s" % timeout,
                          "\n".join(self.lines[-40:])))
                self.cv.wait(min(left, 0.5))

    def wait_re(self, regex, what, count=1, timeout=60):
        r = re.compile(regex)
        self.wait(lambda ls: sum(1 for l in ls if r.search(l)) >= count,
                  what, timeout)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                fail("missedcalld did not stop within 30 s of SIGTERM")
        self.t.join(5)
        if self.p.returncode != 0:
            fail("missedcalld exited %d; log tail:\n%s" %
                 (self.p.returncode, "\n".join(self.lines[-40:])))
        for l in self.lines:
            if "AddressSanitizer" in l or "runtime error" in l or \
               "LeakSanitizer" in l:
                fail("sanitizer report in the daemon log:\n" +
                     "\n".join(self.lines[-60:]))

    def outcomes(self):
        out = []
        with self.cv:
            for l in self.lines:
                m = OUTCOME_RE.search(l)
                if m:
                    out.append(m.groupdict())
        return out


def load_expected():
    rows = mcdtest.load_ami_expected()
    if not rows:
        fail("no rows in expected.tsv")
    return rows


def ids_of(path):
    """Every Uniqueid/Linkedid of a transcript: the call key is one of them."""
    ids = set()
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"(?i)(uniqueid|linkedid|destuniqueid|destlinkedid):\s*(\S+)",
                         line)
            if m:
                ids.add(m.group(2))
    return ids


def test_scenarios():
    rows = load_expected()
    for r in rows:
        if not os.path.exists(os.path.join(DATA, r["scenario"] + ".ami")):
            fail("transcript missing: " + r["scenario"])

    # One fake PBX per transcript, one daemon connected to all of them at
    # once: each transcript is an independent capture, and the pbx name in
    # the log says which one an outcome belongs to.
    sims, ports = [], []
    for r in rows:
        sim, port = amisim(["-p", "0", "--replay",
                            os.path.join(DATA, r["scenario"] + ".ami"),
                            "--linger", "-1"])
        sims.append(sim)
        ports.append((r["scenario"], port))
    d = Daemon("scenarios", ports)
    inbound = {r["scenario"] for r in rows if r["direction"] == "inbound"}

    def missing(lines):
        got = set()
        for l in lines:
            m = OUTCOME_RE.search(l)
            if m:
                got.add(m.group("pbx"))
        return inbound - got

    d.wait_re(r'connected to "Asterisk Call Manager/', "every PBX logged in",
              count=len(rows))
    d.wait(lambda ls: not missing(ls), "an outcome for every inbound scenario "
           "(missing: %s)" % ", ".join(sorted(missing(d.lines))), 90)
    # Internal and outbound calls are decided in the same way; give a
    # straggler the decide grace to show up before checking none did.
    time.sleep(1.0)
    d.stop()
    for sim in sims:
        sim.kill()

    by_scenario = {}
    for o in d.outcomes():
        name = o["pbx"]
        if name in by_scenario:
            fail("%s decided twice: %r and %r" % (name, by_scenario[name], o))
        by_scenario[name] = o

    problems = []
    for r in rows:
        name = r["scenario"]
        o = by_scenario.get(name)
        if r["direction"] != "inbound":
            if o:
                problems.append("%s (%s) produced an inbound outcome %s (%s)" %
                                (name, r["direction"], o["verdict"], o["reason"]))
            continue
        if not o:
            problems.append("%s: no outcome" % name)
            continue
        if o["verdict"] != r["verdict"]:
            problems.append("%s: verdict %s, expected %s" %
                            (name, o["verdict"], r["verdict"]))
        if o["reason"] != r["reason"]:
            problems.append("%s: reason %s, expected %s" %
                            (name, o["reason"], r["reason"]))
        if r["answered_by"] != "-" and o["by"] != r["answered_by"]:
            problems.append("%s: answered by %s, expected %s" %
                            (name, o["by"], r["answered_by"]))
        if o["gap"]:
            problems.append("%s: flagged as ended during a gap" % name)
        want_phone = None if r["caller"] in ("withheld", "-") else r["caller"]
        if o["phone"] != want_phone:
            problems.append("%s: caller %s, expected %s" %
                            (name, o["phone"], want_phone))
    if problems:
        fail("scenario outcomes differ from expected.tsv:\n  " +
             "\n  ".join(problems))

    log = "\n".join(d.lines)
    if SECRET in log:
        fail("the AMI secret appears in the log")

    # The raw streams were recorded for --replay, one file per PBX.
    caps = [f for f in os.listdir(d.record) if f.endswith(".cap")] \
        if os.path.isdir(d.record) else []
    direct = [f for f in caps if f.startswith("direct_answered-")]
    if len(caps) != len(rows) or len(direct) != 1:
        fail("expected one capture per PBX in %s, found %r" % (d.record, caps))
    with open(os.path.join(d.record, direct[0]), "rb") as f:
        cap = f.read()
    if not cap.startswith(b"#missedcalld-capture v1"):
        fail("capture file without the recorder header")
    if b"Event: Newchannel" not in cap or b"1781800000.4001" not in cap:
        fail("capture file does not hold the replayed events")
    print("ok scenarios: %d transcripts on %d connections, %d inbound outcomes match" %
          (len(rows), len(ports), len(inbound)))


def test_login_failure():
    sim, port = amisim(["-p", "0", "--replay",
                        os.path.join(DATA, "caller_cancel.ami"),
                        "--linger", "-1"], secret="another-secret")
    d = Daemon("loginfail", port)
    d.wait_re(r'login failed: "Authentication failed"; retrying in [0-9.]+ s',
              "login failure logged with the server's message")
    if d.p.poll() is not None:
        fail("the daemon exited after a failed login")
    d.stop()
    sim.kill()
    if SECRET in "\n".join(d.lines):
        fail("the AMI secret appears in the log")
    print("ok login failure")


def test_reconnect():
    port = free_port()
    first = os.path.join(DATA, "direct_answered.ami")
    second = os.path.join(DATA, "no_answer.ami")
    sim, _ = amisim(["-p", str(port), "--replay", first, "--linger", "-1"])
    d = Daemon("reconnect", port)
    d.wait(lambda ls: any(OUTCOME_RE.search(l) for l in ls),
           "outcome of the first session")
    sim.kill()
    sim.wait()
    d.wait_re(r"connection lost: .*; retrying in [0-9.]+ s", "loss logged")
    # A new server on the same port: the daemon comes back by itself.
    sim2, _ = amisim(["-p", str(port), "--replay", second, "--linger", "-1"])
    d.wait_re(r'connected to "Asterisk Call Manager/', "second login", count=2)
    d.wait(lambda ls: any((m := OUTCOME_RE.search(l)) and
                          m.group("reason") == "no_answer" for l in ls),
           "outcome of the second session")
    d.stop()
    sim2.kill()
    print("ok reconnect")


def test_oversized():
    """A message over max_message_size is dropped with one error line; the
    connection and the call around it survive."""
    with open(os.path.join(DATA, "direct_answered.ami"), "rb") as f:
        data = f.read()
    first_end = data.index(b"\r\n\r\n") + 4
    big = (b"Event: VarSet\r\nPrivilege: dialplan,all\r\n"
           b"Channel: PJSIP/provider-00000fa0\r\nVariable: SIPHEADERS\r\n"
           b"Value: " + b"x" * 20000 + b"\r\nUniqueid: 1781800000.4001\r\n"
           b"Linkedid: 1781800000.4001\r\n\r\n")
    path = os.path.join(TMP, "oversized.ami")
    with open(path, "wb") as f:
        f.write(data[:first_end] + big + data[first_end:])
    sim, port = amisim(["-p", "0", "--replay", path, "--linger", "-1"])
    d = Daemon("oversized", port, extra="max_message_size = 8192; ping_interval = 2;")
    d.wait(lambda ls: any(OUTCOME_RE.search(l) for l in ls), "outcome")
    d.stop()
    sim.kill()
    o = d.outcomes()
    if len(o) != 1 or o[0]["verdict"] != "answered" or o[0]["by"] != "7001":
        fail("the call around the oversized message: %r" % o)
    errors = [l for l in d.lines if "discarded; connection kept" in l]
    if len(errors) != 1:
        fail("expected one oversized-message error line, got %r" % errors)
    if any("connection lost" in l for l in d.lines):
        fail("the oversized message cost the connection")
    print("ok oversized message")


def test_half_open():
    """A PBX that stops answering (process frozen, TCP still open) is
    declared dead after two unanswered pings."""
    sim, port = amisim(["-p", "0", "--replay",
                        os.path.join(DATA, "caller_cancel.ami"),
                        "--linger", "-1"])
    d = Daemon("halfopen", port, extra="ping_interval = 1;")
    d.wait(lambda ls: any(OUTCOME_RE.search(l) for l in ls), "outcome")
    sim.send_signal(signal.SIGSTOP)
    try:
        d.wait_re(r"connection lost: no answer to 2 pings; retrying in",
                  "dead connection detected", timeout=30)
    finally:
        sim.send_signal(signal.SIGCONT)
    d.stop()
    sim.kill()
    print("ok half-open connection")


def test_resync_gap():
    """A call in progress when the PBX connection drops, and gone from the
    CoreShowChannels list after the reconnect, is reported with the gap
    flag and reason unknown -- never guessed."""
    with open(os.path.join(DATA, "direct_answered.ami"), "rb") as f:
        data = f.read()
    msgs = data.split(b"\r\n\r\n")
    # Up to the ringing (DialBegin, DialState): nothing ends.
    first = b"\r\n\r\n".join(m for m in msgs[:12]) + b"\r\n\r\n"
    if b"Hangup" in first:
        fail("the truncated transcript already ends the call")
    path = os.path.join(TMP, "inflight.ami")
    with open(path, "wb") as f:
        f.write(first)
    port = free_port()
    sim, _ = amisim(["-p", str(port), "--replay", path, "--linger", "-1"])
    d = Daemon("gap", port)
    d.wait_re(r"call 1781800000\.4001", "the in-flight call seen")
    sim.kill()
    sim.wait()
    d.wait_re(r"connection lost: .*; retrying in", "loss logged")
    sim2, _ = amisim(["-p", str(port), "--replay",
                      os.path.join(DATA, "caller_cancel.ami"), "--linger", "-1"])
    d.wait(lambda ls: any((m := OUTCOME_RE.search(l)) and
                          m.group("key") == "1781800000.4001" for l in ls),
           "the in-flight call decided after the resync")
    d.stop()
    sim2.kill()
    o = [x for x in d.outcomes() if x["key"] == "1781800000.4001"]
    if len(o) != 1 or not o[0]["gap"] or o[0]["reason"] != "unknown":
        fail("in-flight call across the reconnect: %r" % o)
    print("ok resync gap")


def main():
    try:
        test_scenarios()
        test_login_failure()
        test_reconnect()
        test_oversized()
        test_half_open()
        test_resync_gap()
    finally:
        cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
