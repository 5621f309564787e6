#!/usr/bin/env python3
"""Integration test of tests/tools/amisim, the fake FreePBX AMI server.

Usage: demo_amisim.py AMISIM AMISIM_CHECK

- --generate is deterministic (same seed, same bytes) and its stream parses
  with missedcalld's AMI parser and matches --truth (amisim_check);
- the live server: banner, failed and good Login, Ping, CoreShowChannels,
  two clients receive the identical stream of a --simulate run, the stream
  matches --truth, amisim exits 0 at the end;
- --replay of a recorded stream sends the same events again (plain
  transcript and missedcalld capture file), also with --realtime pacing.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

AMISIM, CHECK = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="demo_amisim.")
PROCS = []


def fail(msg):
    print("FAIL:", msg)
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    sys.exit(1)


def start(args):
    p = subprocess.Popen([AMISIM] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    PROCS.append(p)
    line = p.stdout.readline()
    if not line.startswith("PORT="):
        fail("amisim did not print PORT= (%r, stderr %s)" % (line, p.stderr.read()))
    return p, int(line[5:])


class Client:
    """A minimal AMI client: reads messages as lists of (key, value)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")
        self.banner = self.f.readline().decode()

    def send(self, text):
        self.s.sendall(text.replace("\n", "\r\n").encode() + b"\r\n")

    def read_raw(self):
        """One message as raw bytes (with its blank line), or None at EOF."""
        buf = b""
        while True:
            line = self.f.readline()
            if not line:
                return None
            buf += line
            if line in (b"\r\n", b"\n"):
                if buf.strip():
                    return buf
                buf = b""

    @staticmethod
    def parse(raw):
        out = []
        for line in raw.decode("utf-8", "replace").splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                out.append((k, v))
            elif line.endswith(":"):
                out.append((line[:-1], ""))
        return out

    def read(self):
        raw = self.read_raw()
        return None if raw is None else self.parse(raw)


def get(msg, key):
    for k, v in msg:
        if k.lower() == key.lower():
            return v
    return None


def check(stream, truth):
    r = subprocess.run([CHECK, stream, truth], capture_output=True, text=True)
    if r.returncode != 0:
        fail("amisim_check %s: %s%s" % (stream, r.stdout, r.stderr))
    print(r.stdout.strip())


def test_generate():
    a, b = os.path.join(TMP, "a.ami"), os.path.join(TMP, "b.ami")
    ta, tb = os.path.join(TMP, "a.tsv"), os.path.join(TMP, "b.tsv")
    mix = ("answered=1,cancel=1,noanswer=1,busy=1,rg_answered=1,rg_unanswered=1,"
           "queue_answered=1,queue_abandon=1,queue_timeout_vm=1,vm_message=1,"
           "vm_nomessage=1,ivr_hangup=1,repeat=1,unknown=1,withheld=1,internal=1,"
           "outbound=1")
    for path, truth in ((a, ta), (b, tb)):
        subprocess.run([AMISIM, "--generate", path, "--events", "20000", "--seed",
                        "11", "--truth", truth, "--mix", mix], check=True,
                       capture_output=True)
    if open(a, "rb").read() != open(b, "rb").read():
        fail("--generate with one seed gave different streams")
    check(a, ta)
    # Every scenario of the mix occurs and has the verdict it should.
    want = {"answered": "answered", "rg_answered": "answered",
            "queue_answered": "answered", "cancel": "caller_cancel",
            "noanswer": "no_answer", "busy": "busy", "rg_unanswered": "no_answer",
            "queue_abandon": "queue_abandon", "queue_timeout_vm": "voicemail",
            "vm_message": "voicemail", "vm_nomessage": "voicemail",
            "ivr_hangup": "ivr_abandon", "internal": "ignored", "outbound": "ignored"}
    seen = set()
    for line in open(ta):
        if line.startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        sc = f[1].split(":")[0]
        seen.add(sc)
        if sc in want:
            got = f[5] if want[sc] in ("answered", "ignored") else f[6]
            if got != want[sc]:
                fail("truth: %s has %s, expected %s" % (sc, got, want[sc]))
        if sc == "withheld" and f[2] != "-":
            fail("withheld call with a number: %s" % line)
    missing = set(mix.replace("=1", "").split(",")) - seen
    if missing:
        fail("scenarios never generated: %s" % missing)
    # The benchmark default: about 70 % of inbound calls answered.
    d, td = os.path.join(TMP, "d.ami"), os.path.join(TMP, "d.tsv")
    subprocess.run([AMISIM, "--generate", d, "--events", "30000", "--truth", td],
                   check=True, capture_output=True)
    rows = [l.split("\t") for l in open(td) if not l.startswith("#")]
    inbound = [r for r in rows if r[4] == "inbound"]
    share = sum(r[5] == "answered" for r in inbound) / len(inbound)
    if not 0.6 < share < 0.8:
        fail("default --generate mix answers %.0f %% of inbound calls" % (share * 100))
    check(d, td)


def test_live():
    truth = os.path.join(TMP, "live.tsv")
    p, port = start(["-p", "0", "-u", "mcd", "-s", "s3cret", "--simulate",
                     "--calls", "60", "--rate", "40", "--time-scale", "0.01",
                     "--timestamps", "--wait-clients", "2", "--truth", truth,
                     "--seed", "3"])
    bad = Client(port)
    if not bad.banner.startswith("Asterisk Call Manager/5.0.5"):
        fail("banner %r" % bad.banner)
    bad.send("Action: Ping\nActionID: x0\n")
    m = bad.read()
    if get(m, "Response") != "Error":
        fail("Ping before Login accepted: %r" % m)
    bad.send("Action: Login\nActionID: x1\nUsername: mcd\nSecret: wrong\n")
    m = bad.read()
    if get(m, "Response") != "Error" or get(m, "Message") != "Authentication failed":
        fail("bad login answered %r" % m)
    if get(m, "ActionID") != "x1":
        fail("ActionID not echoed: %r" % m)
    bad.s.close()

    streams = [[], []]
    clients = []

    def run(i):
        c = Client(port)
        clients.append(c)
        c.send("Action: Login\nActionID: l%d\nUsername: mcd\nSecret: s3cret\nEvents: on\n" % i)
        sent_actions = False
        while True:
            raw = c.read_raw()
            if raw is None:
                return
            msg = Client.parse(raw)
            ev, resp = get(msg, "Event"), get(msg, "Response")
            if resp or get(msg, "ActionID") or ev in ("FullyBooted",):
                streams[i].append(("reply", msg))
                if ev == "FullyBooted" and not sent_actions:
                    sent_actions = True
                    c.send("Action: Ping\nActionID: p%d\n" % i)
                    c.send("Action: Filter\nActionID: f%d\nOperation: Add\nFilter: Event: Hangup\n" % i)
                    c.send("Action: CoreShowChannels\nActionID: c%d\n" % i)
                continue
            streams[i].append(("event", raw))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        if t.is_alive():
            fail("live stream did not end")
    if p.wait(30) != 0:
        fail("amisim exited %s: %s" % (p.returncode, p.stderr.read()))
    for i in range(2):
        replies = [m for kind, m in streams[i] if kind == "reply"]
        if not any(get(m, "Message") == "Authentication accepted" for m in replies):
            fail("client %d: no login success" % i)
        if not any(get(m, "Ping") == "Pong" and get(m, "ActionID") == "p%d" % i for m in replies):
            fail("client %d: no Pong" % i)
        if not any(get(m, "ActionID") == "f%d" % i and get(m, "Response") == "Success" for m in replies):
            fail("client %d: Filter not acknowledged" % i)
        complete = [m for m in replies if get(m, "Event") == "CoreShowChannelsComplete"]
        items = [m for m in replies if get(m, "Event") == "CoreShowChannel"]
        if len(complete) != 1 or int(get(complete[0], "ListItems")) != len(items):
            fail("client %d: CoreShowChannels list broken" % i)
        for it in items:
            if not get(it, "Linkedid") or not get(it, "Uniqueid") or get(it, "ActionID") != "c%d" % i:
                fail("client %d: CoreShowChannel item without ids: %r" % (i, it))
    ev0 = [raw for kind, raw in streams[0] if kind == "event"]
    ev1 = [raw for kind, raw in streams[1] if kind == "event"]
    if ev0 != ev1 or not ev0:
        fail("the two clients got different streams (%d vs %d events)" % (len(ev0), len(ev1)))
    stream = os.path.join(TMP, "live.ami")
    with open(stream, "wb") as f:
        f.write(b"".join(ev0))
    if sum(1 for l in open(truth) if not l.startswith("#")) != 60:
        fail("truth does not list 60 calls")
    check(stream, truth)
    return stream, truth, len(ev0)


def replay_once(args, expect_events):
    p, port = start(["-p", "0", "--replay"] + args)
    c = Client(port)
    c.send("Action: Login\nUsername: admin\nSecret: amp111\n")
    got = []
    while True:
        raw = c.read_raw()
        if raw is None:
            break
        msg = Client.parse(raw)
        if get(msg, "Response") or get(msg, "Event") == "FullyBooted":
            continue
        got.append(raw)
    if p.wait(30) != 0:
        fail("replay exited %s" % p.returncode)
    if len(got) != expect_events:
        fail("replay %s sent %d events, expected %d" % (args, len(got), expect_events))
    return got


def test_replay(stream, truth, n_events):
    got = replay_once([stream], n_events)
    out = os.path.join(TMP, "replayed.ami")
    with open(out, "wb") as f:
        f.write(b"".join(got))
    check(out, truth)
    # A missedcalld capture file: header, frames cut at odd places, and a
    # recorded session's banner, login response and Pong that must not be
    # replayed.
    data = open(stream, "rb").read()
    session = (b"Asterisk Call Manager/5.0.5\r\nResponse: Success\r\nActionID: 1\r\n"
               b"Message: Authentication accepted\r\n\r\n" + data +
               b"Response: Success\r\nActionID: 2\r\nPing: Pong\r\n\r\n")
    cap = os.path.join(TMP, "office.ami.cap")
    with open(cap, "wb") as f:
        f.write(b"#missedcalld-capture v1 proto=ami pbx=office start=2026-01-01T00:00:00Z\n")
        off, ts = 0, 1700000000000000
        while off < len(session):
            n = 977 if off % 2 else 61
            chunk = session[off:off + n]
            f.write(b"#@%d %d\n" % (ts, len(chunk)) + chunk)
            off += n
            ts += 1000
    first = got
    got = replay_once([cap, "--loop", "2"], 2 * n_events)
    if got != first + first:
        fail("looped capture replay differs from the transcript replay")
    # Realtime pacing honours the Timestamp: headers (no timing assertion:
    # only that the paced path delivers everything in order).
    small = os.path.join(TMP, "small.ami")
    with open(small, "wb") as f:
        f.write(b"".join(got[:40]))
    got2 = replay_once([small, "--realtime"], 40)
    if got2 != got[:40]:
        fail("--realtime replay changed the stream")


def main():
    try:
        test_generate()
        stream, truth, n = test_live()
        test_replay(stream, truth, n)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
        subprocess.run(["rm", "-rf", TMP])
    print("OK")


if __name__ == "__main__":
    main()
