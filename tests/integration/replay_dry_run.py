#!/usr/bin/env python3
"""Integration test of `missedcalld --replay CAPTURE --dry-run`.

Usage: replay_dry_run.py MISSEDCALLD AMISIM

1. transcripts: every scenario transcript of tests/data/ami gives, through
   the dry run, the verdict, reason, answered-by, voicemail flag and caller
   of tests/data/ami/expected.tsv (the table the live integration test
   checks the running daemon against); internal calls give nothing,
   outbound calls one outbound result.
2. live == replay: the real daemon takes a simulated FreePBX (amisim
   --simulate, every scenario) with record_dir set; afterwards the capture
   it wrote is replayed with --dry-run and every call gets exactly the
   verdict and reason the live daemon logged, and the one amisim's --truth
   says it should have. One code path, not two.
3. the rules show: missed calls print the would-be appeal (type, manager
   from the config, title, number, deadline); a repeated caller within the
   dedupe window is attached, not created twice; changing the config
   (min_ring_seconds) changes the report.
4. HEP captures (record_dir of a `type = "hep"` pbx) go through the HEP
   decoder, the SIP parser and the SIP dialog layer into the same tracker.
5. errors: --replay without --dry-run is a usage error (2), a missing
   capture and a corrupt frame fail with a message (1), a HEP capture under
   a config without a HEP pbx is refused clearly.
6. the database, read-only: against a real PostgreSQL (tests/lib/
   pg_cluster.sh, migrated with --migrate) the dry run shows the matched
   client's name in the title (a phone stored in a messy format), urgent
   for a client with the VIP tag, 'several clients' for a shared number,
   `attach to existing <number>` for a phone with an open appeal (and a
   later call of the replay attaches to it too), 'already stored' for a
   call the database holds, new numbers continuing the database's counter
   (skipping a number typed by hand), and leaves every table as it was. With the
   database unreachable (every other case here: a closed port) one line
   says so and the report comes from the capture alone.
7. no drift between the dry run and the store: scripts/demo-data.sql's
   clients plus a seeded appeal history; a simulated capture (amisim
   --generate, ~120 calls of known clients incl. VIPs and a shared number,
   unknown and withheld callers, repeats) is dry-run against that database
   FIRST, then the same capture goes through the real daemon (amisim
   --replay --realtime) into it. Per call, what the dry run said (new
   appeal and its number, title, client, type, manager, tags, deadline,
   urgency, candidates of a shared number; attach to which appeal; already
   stored) must be what mcd_submit_one() wrote (the
   appeal_events of the call, appeal_calls), and the appeals table at the
   end must be the seed plus the dry run's prediction. replay_db.c repeats
   the SQL rules by hand: a change on one side only fails here. Routes
   name an appeal type and a manager the CRM lacks at first: the dry run
   says the store would wait, with the store's own message; the store
   waits until the test adds them, then writes what the dry run said.
"""
import calendar
import json
import os
import re
import shlex
import struct
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import mcdtest
from mcdtest import free_port

MISSEDCALLD, AMISIM = sys.argv[1], sys.argv[2]
SRC = os.environ.get("MCD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(SRC, "tests", "data", "ami")
SCRATCH = mcdtest.Scratch("replay_dry_run.")
TMP = SCRATCH.dir
SECRET = "replay-s3cret"
PROCS = SCRATCH.procs
PGDIR = []
PG_CLUSTER = os.path.join(SRC, "tests", "lib", "pg_cluster.sh")
LIVE_RE = re.compile(r"inbound call (?P<key>\S+): (?P<verdict>\w+) \((?P<reason>\w+)\)"
                     r"(?: by (?P<by>[^,\s]+))?")


def stop_clusters():
    for d in PGDIR:
        subprocess.call(["bash", PG_CLUSTER, "stop", d])
    del PGDIR[:]


SCRATCH.hooks.append(stop_clusters)
cleanup = SCRATCH.cleanup
fail = SCRATCH.fail


def write_conf(name, port=5038, record=None, extra_calls="", extra_pbx="",
               conninfo=None, extra_missed=""):
    d = os.path.join(TMP, name)
    os.makedirs(os.path.join(d, "state"), exist_ok=True)
    secret = os.path.join(d, "ami.secret")
    with open(secret, "w") as f:
        f.write(SECRET + "\n")
    conf = os.path.join(d, "missedcalld.conf")
    with open(conf, "w") as f:
        f.write("""
daemon = {{ log_level = "debug"; state_dir = "{state}"; }};
database = {{ conninfo = "{conninfo}"; }};
widget = {{ listen = "127.0.0.1:{wport}"; }};
calls = {{ decide_grace_ms = 300; {extra_calls} }};
missed_calls = {{ manager = "ivanov"; tags = [ "missed" ]; sla_minutes = 30; {extra_missed} }};
pbx = ( {{
  name = "office"; type = "ami"; host = "127.0.0.1"; port = {port};
  username = "admin"; secret_file = "{secret}";
  trunks = [ "PJSIP/provider" ]; inbound_contexts = [ "from-pstn" ];
  {record} {extra_pbx}
}} );
""".format(state=os.path.join(d, "state"), port=port, extra_missed=extra_missed,
           wport=free_port(),
           conninfo=conninfo or
           "hostaddr=127.0.0.1 port=%d dbname=none user=none" % free_port(),
           secret=secret, extra_calls=extra_calls, extra_pbx=extra_pbx,
           record='record_dir = "%s";' % record if record else ""))
    return conf


def dry_run(conf, capture, expect_rc=0):
    r = subprocess.run([MISSEDCALLD, "-c", conf, "--replay", capture, "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != expect_rc:
        fail("--replay %s exited %d (want %d):\n%s%s" % (capture, r.returncode,
                                                         expect_rc, r.stdout, r.stderr))
    for l in r.stderr.splitlines():
        if "AddressSanitizer" in l or "runtime error" in l or "LeakSanitizer" in l:
            fail("sanitizer report:\n" + r.stderr)
    return r


def unescape(v):
    """A report value as it was: the report writes control bytes as \\xNN."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), v)


def parse_report(text):
    """Call lines -> list of dicts; appeal lines attach to the call above."""
    calls, outbound, summary = [], [], None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("summary:"):
            summary = line
            continue
        if line.startswith("    appeal:"):
            words = shlex.split(line.split(":", 1)[1])
            ap = {"kind": words[0]}
            if words[0] == "new":
                ap["index"] = words[1]
            for w in words[1:]:
                if "=" in w:
                    k, v = w.split("=", 1)
                    ap[k] = unescape(v)
            if words[0] == "attach":
                ap["target"] = words[2]
                if words[2] == "existing":
                    ap["target"] = words[3]
                    ap["database"] = True
            calls[-1]["appeal"] = ap
            continue
        if line.startswith(("missed by reason", "appeals (", "HEP packets", "database (")):
            continue
        words = shlex.split(line)
        d = {"time": words[0]}
        for w in words[1:]:
            if "=" in w:
                k, v = w.split("=", 1)
                d[k] = v
        (outbound if "outbound_to" in d else calls).append(d)
    return calls, outbound, summary


def load_expected():
    return mcdtest.load_ami_expected()


def test_transcripts():
    conf = write_conf("transcripts")
    rows = load_expected()
    if len(rows) < 15:
        fail("expected.tsv has only %d rows" % len(rows))
    # The config's conninfo names a closed port: one line says so.
    out = dry_run(conf, os.path.join(DATA, "caller_cancel.ami")).stdout
    want = "# database not reachable: dedupe, client match and VIP shown from the capture only"
    if sum(1 for l in out.splitlines() if l.startswith(want)) != 1:
        fail("no (or more than one) unreachable-database line:\n" + out)
    if "database (read only)" in out:
        fail("database summary without a database:\n" + out)
    for row in rows:
        path = os.path.join(DATA, row["scenario"] + ".ami")
        calls, outbound, summary = parse_report(dry_run(conf, path).stdout)
        if not summary:
            fail("%s: no summary line" % row["scenario"])
        if row["direction"] == "internal":
            if calls or outbound:
                fail("%s: internal call reported: %s" % (row["scenario"], calls + outbound))
            continue
        if row["direction"] == "outbound":
            if calls or len(outbound) != 1 or outbound[0]["result"] != row["verdict"]:
                fail("%s: outbound result %s, expected %s" % (row["scenario"], outbound,
                                                              row["verdict"]))
            continue
        if len(calls) != 1:
            fail("%s: %d calls reported, expected 1: %s" % (row["scenario"], len(calls), calls))
        c = calls[0]
        if (c["verdict"], c["reason"]) != (row["verdict"], row["reason"]):
            fail("%s: %s (%s), expected %s (%s)" % (row["scenario"], c["verdict"], c["reason"],
                                                     row["verdict"], row["reason"]))
        if row["answered_by"] != "-" and c.get("answered_by") != row["answered_by"]:
            fail("%s: answered by %s, expected %s" % (row["scenario"], c.get("answered_by"),
                                                       row["answered_by"]))
        if (c.get("voicemail_left") == "yes") != (row["voicemail_left"] == "1"):
            fail("%s: voicemail_left %s, expected %s" % (row["scenario"],
                                                         c.get("voicemail_left"),
                                                         row["voicemail_left"]))
        want_caller = "withheld" if row["caller"] == "withheld" else row["caller"]
        if c["caller"].lstrip("+") != want_caller.lstrip("+"):
            fail("%s: caller %s, expected %s" % (row["scenario"], c["caller"], want_caller))
        if row["verdict"] == "missed":
            ap = c.get("appeal")
            if not ap or ap["kind"] != "new" or ap.get("manager") != "ivanov" or \
               ap.get("type") != "Пропущенный звонок" or ap.get("tags") != "missed" or \
               not ap.get("number", "").startswith("A-") or ap.get("deadline", "-") == "-":
                fail("%s: appeal line wrong: %s" % (row["scenario"], ap))
        elif "appeal" in c:
            fail("%s: %s call with an appeal" % (row["scenario"], row["verdict"]))
    print("transcripts: %d scenarios match expected.tsv" % len(rows))

    # The same transcript twice in one capture: the second missed call of
    # the number attaches to the first appeal (dedupe window).
    two = os.path.join(TMP, "two.ami")
    with open(two, "wb") as f:
        f.write(open(os.path.join(DATA, "caller_cancel.ami"), "rb").read())
        f.write(open(os.path.join(DATA, "no_answer.ami"), "rb").read())
    calls, _, _ = parse_report(dry_run(conf, two).stdout)
    kinds = [c.get("appeal", {}).get("kind") for c in calls]
    if kinds != ["new", "attach"]:
        fail("dedupe within the replay: appeals %s, expected new then attach" % kinds)

    # Tuning a rule: with min_ring_seconds = 20 the caller cancel after
    # ~11 s becomes a misdial (dropped, no appeal).
    tuned = write_conf("tuned", extra_calls="min_ring_seconds = 20;")
    calls, _, _ = parse_report(dry_run(tuned, os.path.join(DATA, "caller_cancel.ami")).stdout)
    if len(calls) != 1 or calls[0]["verdict"] != "dropped" or "appeal" in calls[0]:
        fail("min_ring_seconds = 20 did not drop the caller cancel: %s" % calls)


class Daemon:
    """The real daemon on a config, its log read by a thread: live maps
    each call key to the verdict, reason and answering party it logged."""

    def __init__(self, conf):
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        self.p = SCRATCH.spawn([MISSEDCALLD, "-c", conf], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, errors="replace", env=env)
        self.lines, self.live = [], {}
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for l in self.p.stderr:
            with self.cv:
                self.lines.append(l.rstrip("\n"))
                m = LIVE_RE.search(l)
                if m:
                    self.live[m.group("key")] = m.groupdict()
                self.cv.notify_all()

    def wait_log(self, text, timeout=30):
        """Waits for a log line containing text."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while not any(text in l for l in self.lines):
                self.cv.wait(1)
                if time.monotonic() > deadline or self.p.poll() is not None:
                    fail("daemon did not log %r; log tail:\n%s" %
                         (text, "\n".join(self.lines[-30:])))

    def tail(self, n=30):
        with self.cv:
            return "\n".join(self.lines[-n:])

    def wait_decided(self, keys, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not all(k in self.live for k in keys):
                self.cv.wait(1)
                if time.monotonic() > deadline or self.p.poll() is not None:
                    missing = [k for k in keys if k not in self.live]
                    fail("daemon did not decide %d calls, e.g. %s; log tail:\n%s" %
                         (len(missing), missing[:3], "\n".join(self.lines[-30:])))

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        if self.p.wait(30) != 0:
            fail("daemon exited %d:\n%s" % (self.p.returncode, self.tail()))
        self.t.join(5)
        for l in self.lines:
            if "AddressSanitizer" in l or "runtime error" in l:
                fail("sanitizer report in the daemon log:\n" + self.tail(40))


def test_live_equals_replay():
    record = os.path.join(TMP, "record")
    truth = os.path.join(TMP, "truth.tsv")
    sim = subprocess.Popen([AMISIM, "-p", "0", "-u", "admin", "-s", SECRET, "--simulate",
                            "--calls", "120", "--rate", "25", "--time-scale", "0.03",
                            "--seed", "42", "--linger", "-1", "--truth", truth,
                            "--mix", "answered=3,cancel=2,noanswer=1,busy=1,rg_answered=1,"
                            "rg_unanswered=1,queue_answered=2,queue_abandon=1,"
                            "queue_timeout_vm=1,vm_message=1,vm_nomessage=1,ivr_hangup=1,"
                            "repeat=1,unknown=1,withheld=1,internal=1,outbound=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(sim)
    line = sim.stdout.readline()
    if not line.startswith("PORT="):
        fail("amisim: %r %s" % (line, sim.stderr.read()))
    port = int(line[5:])
    # Short calls after --time-scale: no misdial or short-IVR filtering, so
    # every simulated missed call must come out missed.
    conf = write_conf("live", port=port, record=record,
                      extra_calls="min_ring_seconds = 0; min_ivr_seconds = 0;")
    d = Daemon(conf)
    # amisim has simulated everything once its truth file lists all calls.
    deadline = time.monotonic() + 120
    while True:
        rows = [l.rstrip("\n").split("\t") for l in open(truth) if not l.startswith("#")]
        if len(rows) == 120:
            break
        if time.monotonic() > deadline or sim.poll() is not None:
            fail("simulation did not finish: %d calls; daemon log:\n%s" %
                 (len(rows), d.tail()))
        time.sleep(0.2)
    inbound = {r[0]: r for r in rows if r[4] == "inbound"}
    d.wait_decided(inbound)
    d.stop()
    sim.send_signal(signal.SIGTERM)
    sim.wait(10)
    live = d.live

    # Live verdicts against the simulator's truth.
    for key, r in inbound.items():
        lv = live[key]
        if (lv["verdict"], lv["reason"]) != (r[5], r[6]):
            fail("live: call %s (%s) decided %s (%s), truth %s (%s)" %
                 (key, r[1], lv["verdict"], lv["reason"], r[5], r[6]))
    extra = set(live) - set(inbound)
    if extra:
        fail("live: outcomes for calls that are not inbound: %s" % sorted(extra)[:5])

    caps = sorted(os.listdir(record))
    if len(caps) != 1 or not caps[0].startswith("office-") or not caps[0].endswith(".ami.cap"):
        fail("record_dir holds %s, expected one office-*.ami.cap" % caps)
    cap = os.path.join(record, caps[0])
    if not open(cap, "rb").readline().startswith(b"#missedcalld-capture v1 proto=ami pbx=office"):
        fail("capture header wrong")
    notes = re.findall(rb"(?m)^#!\d+ (\w+)$", open(cap, "rb").read())
    if notes[:1] != [b"connected"]:
        fail("capture does not start its session with a 'connected' note: %s" % notes[:3])
    calls, outbound, summary = parse_report(dry_run(conf, cap).stdout)
    replayed = {c["call"]: c for c in calls}
    if set(replayed) != set(live):
        fail("replay decided %d calls, live %d; differ: %s" %
             (len(replayed), len(live), sorted(set(replayed) ^ set(live))[:5]))
    for key, lv in live.items():
        c = replayed[key]
        if (c["verdict"], c["reason"]) != (lv["verdict"], lv["reason"]):
            fail("call %s: live %s (%s), replay %s (%s)" % (key, lv["verdict"], lv["reason"],
                                                         c["verdict"], c["reason"]))
        if (lv.get("by") or None) != (c.get("answered_by") or None):
            fail("call %s: answered by %s live, %s in the replay" % (key, lv.get("by"),
                                                                     c.get("answered_by")))
        if c.get("gap") == "yes":
            fail("call %s: replay says it ended unseen" % key)
    n_out = sum(1 for r in rows if r[4] == "outbound")
    if len(outbound) != n_out:
        fail("replay: %d outbound results, truth has %d outbound calls" % (len(outbound), n_out))
    missed = sum(1 for r in inbound.values() if r[5] == "missed")
    appeals = [c for c in calls if "appeal" in c]
    if len(appeals) != missed:
        fail("replay: %d appeal lines for %d missed calls" % (len(appeals), missed))
    print("live == replay: %d inbound calls (%d missed), %d outbound" %
          (len(live), missed, n_out))


def hep3(payload, src, dst, ts_usec, capture_id=2001):
    """One HEPv3 message (chunk ids of the HEP spec) around a SIP text."""
    def chunk(t, v):
        return struct.pack("!HHH", 0, t, 6 + len(v)) + v
    (sip, sport), (dip, dport) = src, dst
    body = (chunk(1, b"\x02") + chunk(2, b"\x11") +
            chunk(3, socket.inet_aton(sip)) + chunk(4, socket.inet_aton(dip)) +
            chunk(7, struct.pack("!H", sport)) + chunk(8, struct.pack("!H", dport)) +
            chunk(9, struct.pack("!I", ts_usec // 1000000)) +
            chunk(10, struct.pack("!I", ts_usec % 1000000)) +
            chunk(11, b"\x01") + chunk(12, struct.pack("!I", capture_id)) +
            chunk(15, payload.replace("\n", "\r\n").encode()))
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def sip_call(callid, caller, did, final, t0):
    """Messages of one inbound call from the trunk 192.0.2.10 to the PBX
    198.51.100.5: INVITE, 180, then 200 (answered) or CANCEL/487."""
    trunk, pbx = ("192.0.2.10", 5060), ("198.51.100.5", 5060)
    hdr = ("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%s\n"
           "From: <sip:%s@192.0.2.10>;tag=f-%s\n" % (callid, caller, callid))
    to = "To: <sip:%s@198.51.100.5>" % did
    tail = "Call-ID: %s\nContent-Length: 0\n\n" % callid
    msgs = [(t0, trunk, pbx, "INVITE sip:%s@198.51.100.5 SIP/2.0\n%s%s\nCSeq: 1 INVITE\n"
             "Contact: <sip:%s@192.0.2.10>\n%s" % (did, hdr, to, caller, tail)),
            (t0 + 200000, pbx, trunk, "SIP/2.0 180 Ringing\n%s%s;tag=t-%s\nCSeq: 1 INVITE\n%s"
             % (hdr, to, callid, tail))]
    if final == "answer":
        msgs += [(t0 + 6000000, pbx, trunk, "SIP/2.0 200 OK\n%s%s;tag=t-%s\nCSeq: 1 INVITE\n"
                  "Contact: <sip:7001@198.51.100.5>\n%s" % (hdr, to, callid, tail)),
                 (t0 + 60000000, trunk, pbx, "BYE sip:7001@198.51.100.5 SIP/2.0\n"
                  "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-b%s\n"
                  "From: <sip:%s@192.0.2.10>;tag=f-%s\n%s;tag=t-%s\nCSeq: 2 BYE\n%s"
                  % (callid, caller, callid, to, callid, tail)),
                 (t0 + 60100000, pbx, trunk, "SIP/2.0 200 OK\n"
                  "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-b%s\n"
                  "From: <sip:%s@192.0.2.10>;tag=f-%s\n%s;tag=t-%s\nCSeq: 2 BYE\n%s"
                  % (callid, caller, callid, to, callid, tail))]
    else:
        msgs += [(t0 + 9000000, trunk, pbx, "CANCEL sip:%s@198.51.100.5 SIP/2.0\n%s%s\n"
                  "CSeq: 1 CANCEL\n%s" % (did, hdr, to, tail)),
                 (t0 + 9100000, pbx, trunk, "SIP/2.0 200 OK\n%s%s;tag=t-%s\nCSeq: 1 CANCEL\n%s"
                  % (hdr, to, callid, tail)),
                 (t0 + 9200000, pbx, trunk, "SIP/2.0 487 Request Terminated\n%s%s;tag=t-%s\n"
                  "CSeq: 1 INVITE\n%s" % (hdr, to, callid, tail))]
    return msgs


def test_hep():
    d = os.path.join(TMP, "hep")
    os.makedirs(d)
    conf = os.path.join(d, "missedcalld.conf")
    with open(conf, "w") as f:
        f.write("""
daemon = {{ state_dir = "{d}"; }};
database = {{ conninfo = "hostaddr=127.0.0.1 port=1 dbname=none user=none"; }};
missed_calls = {{ manager = "ivanov"; }};
pbx = ( {{ name = "sbc"; type = "hep"; trunks = [ "192.0.2.10" ];
          listen = [ "udp:127.0.0.1:9" ]; capture_id = 2001; }} );
""".format(d=d))
    t0 = 1781900000000000
    msgs = sip_call("c1-answered", "79161234567", "74951234567", "answer", t0) + \
        sip_call("c2-cancel", "79169990000", "74951234567", "cancel", t0 + 1000000)
    msgs.sort(key=lambda m: m[0])
    cap = os.path.join(d, "sbc.hep.cap")
    with open(cap, "wb") as f:
        f.write(b"#missedcalld-capture v1 proto=hep pbx=sbc start=2026-06-20T00:00:00Z\n")
        for ts, src, dst, text in msgs:
            pkt = hep3(text, src, dst, ts)
            f.write(b"#@%d %d\n" % (ts, len(pkt)) + pkt)
        junk = b"not a HEP packet"
        f.write(b"#@%d %d\n" % (t0 + 70000000, len(junk)) + junk)
    r = dry_run(conf, cap)
    calls, _, _ = parse_report(r.stdout)
    got = {c["call"].split(";")[0]: c for c in calls}
    if set(got) != {"c1-answered", "c2-cancel"}:
        fail("HEP replay decided %s:\n%s%s" % (sorted(got), r.stdout, r.stderr))
    if got["c1-answered"]["verdict"] != "answered":
        fail("HEP answered call: %s" % got["c1-answered"])
    c2 = got["c2-cancel"]
    if (c2["verdict"], c2["reason"]) != ("missed", "caller_cancel") or \
       c2.get("appeal", {}).get("kind") != "new" or c2["did"] != "74951234567":
        fail("HEP cancelled call: %s" % c2)
    if "not used: 1" not in r.stdout:
        fail("the junk datagram was not counted:\n" + r.stdout)
    print("HEP capture: answered + caller_cancel through the SIP dialog layer")


def test_errors():
    conf = write_conf("errors")
    r = subprocess.run([MISSEDCALLD, "-c", conf, "--replay",
                        os.path.join(DATA, "busy.ami")], capture_output=True, text=True)
    if r.returncode != 2 or "--dry-run" not in r.stderr:
        fail("--replay without --dry-run: rc %d, %s" % (r.returncode, r.stderr))
    r = dry_run(conf, os.path.join(TMP, "nonexistent.cap"), expect_rc=1)
    if "cannot open" not in r.stderr:
        fail("missing capture: %s" % r.stderr)
    bad = os.path.join(TMP, "bad.cap")
    with open(bad, "wb") as f:
        f.write(b"#missedcalld-capture v1 proto=ami pbx=office start=x\n#@1 5\nEvent#@zz\n")
    r = dry_run(conf, bad, expect_rc=1)
    if "corrupt" not in r.stderr:
        fail("corrupt capture: %s" % r.stderr)
    hep = os.path.join(TMP, "hep.cap")
    with open(hep, "wb") as f:
        f.write(b"#missedcalld-capture v1 proto=hep pbx=sip start=x\n#@1 4\nHEP3")
    r = dry_run(conf, hep, expect_rc=1)
    if "no HEP pbx entry" not in r.stderr:
        fail("HEP capture under an AMI-only config: %s" % r.stderr)


def transcript_as(scenario, caller):
    """The scenario's transcript with its caller number replaced."""
    data = open(os.path.join(DATA, scenario + ".ami"), "rb").read()
    return data.replace(b"79161234567", caller.encode())


def start_pg():
    """One throwaway PostgreSQL cluster for the database cases: (dir, PG_* env)."""
    pgdir = tempfile.mkdtemp(prefix="replay_dry_run_pg.")
    PGDIR.append(pgdir)
    r = subprocess.run(["bash", PG_CLUSTER, "start", pgdir], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        fail("pg_cluster start: %s%s" % (r.stdout, r.stderr))
    env = {}
    for line in r.stdout.splitlines():
        if "=" in line and line.startswith("PG_"):
            k, v = line.split("=", 1)
            env[k] = shlex.split(v)[0] if v else ""
    return pgdir, env


def psql(pgdir, sql=None, db="missedcalld", path=None):
    """Runs SQL (or the file path) as the superuser; the output, stripped."""
    r = subprocess.run(["bash", PG_CLUSTER, "psql", pgdir, "-d", db, "-qAt"] +
                       (["-f", path] if path else ["-c", sql]),
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("psql %s: %s" % (path or sql, r.stderr))
    return r.stdout.strip()


def migrate(conf):
    r = subprocess.run([MISSEDCALLD, "-c", conf, "--migrate"], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        fail("--migrate: %s%s" % (r.stdout, r.stderr))


def test_database(pgdir, env):
    conf = write_conf("database", conninfo=env["PG_CONNINFO"],
                      extra_missed='urgent = { vip_tag = "VIP"; };')
    migrate(conf)

    def q(sql):
        return psql(pgdir, sql)

    # A VIP client with a messy phone, a plain client with an open appeal
    # (and a closed one, never a target), a number two clients share, and
    # one call the database already holds.
    q("""
INSERT INTO appeal_statuses (name, is_closed) VALUES ('Новое', false), ('Закрыто', true);
INSERT INTO appeal_types (name, initial_status_id) VALUES ('Пропущенный звонок', 1);
INSERT INTO employees (login, name) VALUES ('ivanov', 'Иванов');
INSERT INTO clients (id, name) VALUES (1, 'ООО Ромашка'), (2, 'Пётр Сидоров'),
  (3, 'Анна'), (4, 'Борис');
INSERT INTO client_phones (client_id, phone) VALUES (1, '8 (903) 555-00-11, доб. 5'),
  (2, '+7 926 111-22-33'), (3, '8-916-123-45-67'), (4, '+7 (916) 1234567');
INSERT INTO client_tags (client_id, tag) VALUES (1, 'VIP'), (2, 'regular');
INSERT INTO appeals (number, title, type_id, status_id, client_id, client_name, phone,
  origin, calls_count, last_call_at)
VALUES ('A-2026-000123', 'Пропущенный звонок — Пётр Сидоров', 1, 1, 2, 'Пётр Сидоров',
  '+79261112233', 'missed_call', 1, to_timestamp(1781801000 - 3600)),
  ('A-2026-000124', 'closed one', 1, 2, 1, 'ООО Ромашка', '+79035550011', 'missed_call', 1,
  to_timestamp(1781801000 - 60));
-- The counter says 123 was the last number; 124 was typed by hand (skipped).
INSERT INTO appeal_number_counters (period, last_value) VALUES ('A-2026-{seq}', 123);
INSERT INTO appeal_calls (appeal_id, pbx, call_key, caller, phone, reason, ended_at)
VALUES (1, 'office', '1781812000.5201', '79161234567', '+79161234567', 'voicemail',
  to_timestamp(1781812030));
""")
    if q("SELECT phone_e164 FROM client_phones WHERE client_id = 1") != "+79035550011":
        fail("the messy phone did not normalise: %s" %
             q("SELECT phone_e164 FROM client_phones WHERE client_id = 1"))
    counts_sql = ("SELECT (SELECT count(*) FROM appeals), (SELECT count(*) FROM appeal_calls),"
                  " (SELECT count(*) FROM appeal_events),"
                  " (SELECT count(*) FROM appeal_number_counters),"
                  " (SELECT max(updated_at) FROM appeals), (SELECT sum(calls_count) FROM appeals)")
    before = q(counts_sql)

    cap = os.path.join(TMP, "database.ami")
    with open(cap, "wb") as f:
        f.write(transcript_as("caller_cancel", "79035550011"))   # VIP client
        f.write(transcript_as("no_answer", "79261112233"))       # open appeal
        f.write(transcript_as("busy", "79161234567"))            # two clients
        f.write(transcript_as("unavailable", "79261112233"))     # open appeal again
        f.write(open(os.path.join(DATA, "voicemail_message.ami"), "rb").read())  # stored
    out = dry_run(conf, cap).stdout
    calls, _, _ = parse_report(out)
    if "database not reachable" in out or \
       not re.search(r"(?m)^# database \S+: client match, VIP tag and open appeals", out):
        fail("no database header line:\n" + out)
    aps = [c.get("appeal") for c in calls]
    if len(calls) != 5 or None in aps:
        fail("database replay: %d calls, appeals %s:\n%s" % (len(calls), aps, out))
    vip, opened, shared, again, stored = aps
    if vip.get("number") != "A-2026-000125" or shared.get("number") != "A-2026-000126":
        fail("numbers do not continue the database's counter (skipping a taken one): "
             "%s, %s\n%s" % (vip.get("number"), shared.get("number"), out))
    if vip["kind"] != "new" or "ООО Ромашка" not in vip.get("title", "") or \
       vip.get("client") != "ООО Ромашка" or vip.get("urgent") != "yes":
        fail("VIP client's appeal: %s\n%s" % (vip, out))
    if opened["kind"] != "attach" or opened.get("target") != "A-2026-000123" or \
       not opened.get("database") or opened.get("client") != "Пётр Сидоров" or \
       opened.get("urgent") != "no":
        fail("call of the phone with an open appeal: %s\n%s" % (opened, out))
    if "attach to existing A-2026-000123 (open, database)" not in out:
        fail("no 'attach to existing' line:\n" + out)
    if shared["kind"] != "new" or shared.get("client") != "several clients (2)" or \
       "Анна" in shared.get("title", "") or "+79161234567" not in shared.get("title", ""):
        fail("number of two clients: %s\n%s" % (shared, out))
    if again["kind"] != "attach" or again.get("target") != "A-2026-000123":
        fail("second call of the phone with an open appeal: %s\n%s" % (again, out))
    if stored["kind"] != "already" or stored.get("number") != "A-2026-000123":
        fail("call already in the database: %s\n%s" % (stored, out))
    if "database (read only): 2 attached to an open appeal of the database, " \
       "1 calls already stored" not in out:
        fail("database summary line:\n" + out)
    after = q(counts_sql)
    if after != before:
        fail("the dry run changed the database: %s -> %s" % (before, after))

    # Not migrated: the same one line, the report from the capture alone.
    q("CREATE DATABASE empty")
    bare = write_conf("bare", conninfo=env["PG_CONNINFO"].replace("dbname=missedcalld",
                                                                  "dbname=empty"))
    out = dry_run(bare, cap).stdout
    if not re.search(r"(?m)^# database not reachable: dedupe, client match and VIP shown "
                     r"from the capture only \(the database is not migrated", out):
        fail("unmigrated database:\n" + out)
    calls, _, _ = parse_report(out)
    if [c["appeal"]["kind"] for c in calls] != ["new", "new", "new", "attach", "attach"]:
        fail("capture-only dedupe: %s" % [c["appeal"] for c in calls])
    print("database: client name, VIP, several clients, open appeal, stored call; "
          "nothing written")


# ---- 7. no drift: the dry run's database decisions == what the store writes ----

T0 = 1781700000  # where amisim --generate's virtual clock starts
NO_TYPE_DID = "74950000099"
# A numbering with dates, a width without a leading zero and a suffix: the
# store splits the number around {seq} (store_batch.c), the dry run too.
NUMBERING = "ЗВ-{yy}{mm}/{seq:5}-M"
PERIOD = "ЗВ-2606/{seq}-M"  # June 2026: the capture's month


def num(n):
    return PERIOD.replace("{seq}", "%05d" % n)


# Clients whose names the title must carry as the database has them: one
# longer than any buffer of the report, an empty one, one with a tab and
# a newline typed into the CRM.
ODD_CLIENTS = [
    ("+79990000001", "Общество с ограниченной ответственностью «Научно-производственное "
     "объединение „Северо-Западная энергосбытовая и сетевая компания“ имени "
     "академика Константина Эдуардовича Циолковского» (филиал в Санкт-Петербурге)"),
    ("+79990000002", ""),
    ("+79990000003", "ИП Гусев\tсклад\nпосле 18:00"),
]
NEW_TYPE = "Заявка по телефону"
DRIFT_MIX = ("answered=2,cancel=3,noanswer=2,busy=1,queue_abandon=1,queue_timeout_vm=1,"
             "vm_message=1,vm_nomessage=1,rg_unanswered=1,ivr_hangup=1,repeat=3,unknown=2,"
             "withheld=1,internal=1,outbound=1")


def e164(presented):
    """A Russian number as amisim presents it (+7…, 7…, 8…) in E.164."""
    d = re.sub(r"\D", "", presented)
    return "+7" + d[1:] if len(d) == 11 and d[0] in "78" else "+" + d


def pick_phones(q):
    """Phones of scripts/demo-data.sql's clients for the capture, by role:
    the number two clients share, two VIPs, a company, an office line, and
    plain mobiles (the first four get an appeal history in the seed)."""
    rows = json.loads(q(
        "SELECT json_agg(json_build_array(cp.phone_e164, c.id, c.name,"
        " EXISTS (SELECT 1 FROM client_tags t WHERE t.client_id = c.id AND t.tag = 'VIP'),"
        " (SELECT count(DISTINCT x.client_id) FROM client_phones x"
        "  WHERE x.phone_e164 = cp.phone_e164)) ORDER BY c.id, cp.phone_e164)"
        " FROM client_phones cp JOIN clients c ON c.id = cp.client_id"))
    roles, used = {}, set()

    def take(role, n, pred):
        for phone, cid, name, vip, shared in rows:
            if n and phone not in used and pred(phone, name, vip, shared):
                roles.setdefault(role, []).append((phone, int(cid), name))
                used.add(phone)
                n -= 1
        if n:
            fail("demo-data.sql has no client for the role %s" % role)

    take("shared", 1, lambda p, n, v, s: s > 1)
    take("vip", 2, lambda p, n, v, s: v and s == 1)
    take("company", 1, lambda p, n, v, s: "«" in n and not v and s == 1)
    take("office", 1, lambda p, n, v, s: p.startswith("+7495") and not v and s == 1)
    take("plain", 7, lambda p, n, v, s: p.startswith("+79") and not v and s == 1)
    take("odd", len(ODD_CLIENTS), lambda p, n, v, s: p in dict(ODD_CLIENTS))
    return roles


def drift_seed(q, roles, stored):
    """An appeal history around the capture's start (T0): an open appeal
    with two recent calls (attach target; with the first new call the
    repeat count reaches 3), a closed one and a stale open one (never
    targets), an open appeal that did not come from a missed call (never a
    target), a number typed by hand where the counter goes next (skipped),
    and the call `stored` (pbx office) already in appeal_calls."""
    (r1, r1id, r1name), (r2, r2id, r2name), (r3, r3id, r3name), (r4, r4id, r4name) = \
        roles["plain"][:4]
    key, phone, caller, ended = stored
    r1name, r2name, r3name, r4name = (n.replace("'", "''") for n in
                                      (r1name, r2name, r3name, r4name))
    q(re.sub(r"A-2026-000(\d{3})", lambda m: num(int(m.group(1))), """
INSERT INTO employees (login, name) VALUES ('ivanov', 'Иванов');
INSERT INTO appeal_number_counters (period, last_value) VALUES ('{period}', 700);
CREATE TEMP TABLE seed (number text, phone text, client_id bigint, client_name text,
  closed boolean, origin text, last_call bigint, calls integer);
INSERT INTO seed VALUES
  ('A-2026-000650', '{r1}', {r1id}, '{r1name}', false, 'missed_call', {t0} - 1800, 2),
  ('A-2026-000651', '{r2}', {r2id}, '{r2name}', true, 'missed_call', {t0} - 600, 1),
  ('A-2026-000652', '{r3}', {r3id}, '{r3name}', false, 'missed_call', {t0} - 3 * 86400, 1),
  ('A-2026-000653', '{r4}', {r4id}, '{r4name}', false, 'manual', {t0} - 60, 0),
  ('A-2026-000654', '{phone}', NULL, NULL, true, 'missed_call', {ended}, 1),
  ('A-2026-000702', NULL, NULL, NULL, true, 'manual', {t0} - 7200, 0);
INSERT INTO appeals (number, title, type_id, status_id, client_id, client_name, phone,
  origin, calls_count, last_call_at)
SELECT s.number, 'seeded ' || s.number,
  (SELECT id FROM appeal_types WHERE name = 'Пропущенный звонок'),
  (SELECT id FROM appeal_statuses WHERE name = CASE WHEN s.closed THEN 'Перезвонили'
   ELSE 'Новое' END), s.client_id, s.client_name, s.phone, s.origin, s.calls,
  to_timestamp(s.last_call) FROM seed s ORDER BY s.number;
INSERT INTO appeal_calls (appeal_id, pbx, call_key, caller, phone, reason, ended_at)
SELECT a.id, 'office', c.key, c.caller, a.phone, 'no_answer', to_timestamp(c.ended)
FROM (VALUES ('A-2026-000650', 'seed-1', '{r1}', {t0} - 2400),
             ('A-2026-000650', 'seed-2', '{r1}', {t0} - 1800),
             ('A-2026-000651', 'seed-3', '{r2}', {t0} - 600),
             ('A-2026-000652', 'seed-4', '{r3}', {t0} - 3 * 86400),
             ('A-2026-000654', '{key}', '{caller}', {ended})) AS c (number, key, caller, ended)
JOIN appeals a ON a.number = c.number;
""".format(t0=T0, r1=r1, r1id=r1id, r1name=r1name, r2=r2, r2id=r2id, r2name=r2name,
           r3=r3, r3id=r3id, r3name=r3name, r4=r4, r4id=r4id, r4name=r4name,
           key=key, phone=phone, caller=caller, ended=ended, period=PERIOD)))


def store_truth(q, since):
    """Per call key what the store wrote after appeal_events id `since`:
    the event's kind and the appeal as it was right after this call."""
    text = q("""
SELECT COALESCE(json_agg(json_build_object(
  'key', e.payload->'call'->>'call_key', 'kind', e.kind,
  'number', e.payload->'appeal'->>'number', 'title', e.payload->'appeal'->>'title',
  'type', e.payload->'appeal'->>'type',
  'urgent', (e.payload->'appeal'->>'urgent')::boolean,
  'client', e.payload->'appeal'->>'client_name',
  'manager', e.payload->'appeal'->'manager'->>'login',
  'candidates', jsonb_array_length(e.payload->'candidates'),
  'tags', e.payload->'appeal'->'tags',
  'deadline', floor(extract(epoch FROM (e.payload->'appeal'->>'deadline')::timestamptz)))
  ORDER BY e.id), '[]')
FROM appeal_events e WHERE e.id > %d AND e.kind IN ('appeal.created', 'appeal.updated')
""" % since)
    got = {}
    for ev in json.loads(text):
        if ev["key"] in got:
            fail("the store wrote two events for call %s" % ev["key"])
        got[ev["key"]] = ev
    return got


def drift_coverage(missed, roles, out):
    """The capture must exercise every rule the comparison is about (a
    change of amisim's generator must not quietly empty the test)."""
    plain = [p for p, _, _ in roles["plain"]]
    by_phone = {}
    for c in missed:
        if c["caller"] != "withheld":
            by_phone.setdefault(e164(c["caller"]), []).append(c["appeal"])
    aps = [c["appeal"] for c in missed]
    first = {}  # the first appeal decision per phone
    for p, v in by_phone.items():
        for a in v:
            if a["kind"] in ("new", "attach"):
                first[p] = a
                break
    checks = {
        "a VIP client's first call: new, urgent by the tag":
            any(first.get(p, {}).get("vip") == "yes" for p, _, _ in roles["vip"]),
        "the shared number: several clients":
            any(a.get("client", "").startswith("several clients") for a in aps),
        "a known client's name in a title":
            any(a["kind"] == "new" and a.get("client") not in (None, "unknown") and
                a.get("client") in a.get("title", "") for a in aps),
        "an unknown caller's number in a title":
            any(a["kind"] == "new" and a.get("client") == "unknown" and
                "+7" in a.get("title", "") for a in aps),
        "a withheld caller": any(c["caller"] == "withheld" for c in missed),
        "the seeded open appeal: attached, urgent by the stored calls":
            first.get(plain[0], {}).get("target") == num(650) and
            first[plain[0]].get("urgent") == "yes",
        "closed, stale and non-missed-call appeals: never targets": all(
            first.get(p, {}).get("kind") == "new" for p in plain[1:4]),
        "repeat calls attached within this replay":
            any(a["kind"] == "attach" and not a.get("database") for a in aps),
        "urgent and not urgent": {a.get("urgent") for a in aps} >= {"yes", "no"},
        "the number typed by hand skipped": {num(701), num(703)} <=
            {a.get("number") for a in aps} and num(702) not in
            [a.get("number") for a in aps if a["kind"] == "new"],
        "one call already stored": sum(a["kind"] == "already" for a in aps) == 1,
        "a route's appeal type": any(a.get("type") == NEW_TYPE for a in aps),
        "a route's manager and tag": any(a.get("manager") == "nobody" and
                                         a.get("tags") == "missed,sales" for a in aps),
        "odd client names in titles": all(
            first.get(p, {}).get("kind") == "new" for p, _ in ODD_CLIENTS),
    }
    missing = [k for k, ok in checks.items() if not ok]
    if missing:
        fail("drift: the capture does not exercise: %s\n%s" % ("; ".join(missing), out))


def test_drift(pgdir, env):
    """The dry run against the database as it is, then the same capture
    through the real daemon into that database: per call the same
    decision (new appeal and its number, title, client, or the appeal it
    attaches to; urgency; already stored)."""
    psql(pgdir, "CREATE DATABASE drift OWNER missedcalld")
    conninfo = env["PG_CONNINFO"].replace("dbname=missedcalld", "dbname=drift")

    def q(sql):
        return psql(pgdir, sql, db="drift")

    # Routes: calls to one DID go to a manager, to another to an appeal
    # type, that the CRM does not have yet (added during the real run).
    missed_rules = ('urgent = { vip_tag = "VIP"; repeat_count = 3; repeat_window_minutes = 60; };'
                    ' numbering = "%s";' % NUMBERING +
                    ' routes = ( { did = "74957654321"; manager = "nobody"; tags = [ "sales" ]; },'
                    ' { did = "%s"; appeal_type = "%s"; } );' % (NO_TYPE_DID, NEW_TYPE))
    calls_rules = "min_ring_seconds = 0; min_ivr_seconds = 0;"
    migrate(write_conf("drift_migrate", conninfo=conninfo))
    psql(pgdir, db="drift", path=os.path.join(SRC, "scripts", "demo-data.sql"))
    for phone, name in ODD_CLIENTS:
        q("WITH c AS (INSERT INTO clients (name) VALUES (E'%s') RETURNING id)"
          " INSERT INTO client_phones (client_id, phone) SELECT id, '%s' FROM c" %
          (name.replace("\\", "\\\\").replace("'", "\\'").replace("\t", "\\t")
           .replace("\n", "\\n"), phone))
    roles = pick_phones(q)
    phones = os.path.join(TMP, "drift.phones")
    with open(phones, "w") as f:
        for role in sorted(roles):
            for phone, _, _ in roles[role]:
                f.write(phone + "\n")
    cap, truth = os.path.join(TMP, "drift.ami"), os.path.join(TMP, "drift.truth")
    r = subprocess.run([AMISIM, "--generate", cap, "--events", "3500", "--seed", "11",
                        "--timestamps", "--time-scale", "0.03", "--rate", "20",
                        "--phones", phones, "--truth", truth, "--mix", DRIFT_MIX,
                        "--dids", "74951234567,74957654321,74951234567,74957654321,"
                        + NO_TYPE_DID],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("amisim --generate: %s" % r.stderr)
    rows = [l.rstrip("\n").split("\t") for l in open(truth) if not l.startswith("#")]
    inbound = {r[0]: r for r in rows if r[4] == "inbound"}
    known = {p for v in roles.values() for p, _, _ in v}
    # The call already stored: an early missed call of a known client
    # without a seeded history.
    seeded_phones = {p for p, _, _ in roles["plain"][:4]}
    st = next(r for r in rows if r[4] == "inbound" and r[5] == "missed" and r[2] != "-" and
              e164(r[2]) in known - seeded_phones)
    drift_seed(q, roles, (st[0], e164(st[2]), st[2], int(float(st[0])) + 1))
    state_sql = ("SELECT (SELECT count(*) FROM appeals), (SELECT max(id) FROM appeal_calls),"
                 " (SELECT COALESCE(max(id), 0) FROM appeal_events),"
                 " (SELECT string_agg(period || '=' || last_value, ',')"
                 "  FROM appeal_number_counters)")
    before = q(state_sql)
    seeded = appeals_now(q)
    calls_before, events_before = (int(x) for x in before.split("|")[1:3])

    # The dry run first, against the database before the real run.
    sim, port = mcdtest.start_amisim(SCRATCH, AMISIM, ["-p", "0", "--replay", cap,
                                                       "--realtime", "--linger", "-1"],
                                     SECRET)
    conf = write_conf("drift", port=port, conninfo=conninfo, extra_calls=calls_rules,
                      extra_missed=missed_rules)
    out = dry_run(conf, cap).stdout
    if not re.search(r"(?m)^# database \S+: client match", out):
        fail("drift: the dry run did not use the database:\n" + out)
    if q(state_sql) != before:
        fail("drift: the dry run changed the database")
    m = re.search(r"(?m)^# the store would write nothing yet: (.*) \(it keeps the calls", out)
    if not m or NEW_TYPE not in m.group(1) or '"nobody"' not in m.group(1):
        fail("drift: the dry run does not say the store lacks the route's type and manager:\n"
             + out)
    missing = m.group(1)
    calls, _, _ = parse_report(out)
    dry = {c["call"]: c for c in calls}
    if set(dry) != set(inbound):
        fail("drift: the dry run decided %s, the capture has %d inbound calls" %
             (len(dry), len(inbound)))
    missed = [c for c in calls if c["verdict"] == "missed"]
    drift_coverage(missed, roles, out)

    # The same capture through the real daemon, into the same database.
    d = Daemon(conf)
    # The store refuses to write with the message the dry run printed,
    # and writes once the CRM has the type and the login.
    d.wait_log("store: " + missing)
    d.wait_log("store: checking -> incompatible")
    if int(q("SELECT count(*) FROM appeal_calls WHERE id > %d" % calls_before)):
        fail("drift: the store wrote while incompatible")
    q("INSERT INTO appeal_types (name, initial_status_id) SELECT '%s', id FROM appeal_statuses"
      " WHERE name = 'Новое'; INSERT INTO employees (login, name) VALUES ('nobody', 'Новый')"
      % NEW_TYPE)
    d.wait_decided(inbound)
    n_live_missed = sum(1 for v in d.live.values() if v["verdict"] == "missed")
    deadline = time.monotonic() + 30
    # Every missed call but the stored one is a row.
    while int(q("SELECT count(*) FROM appeal_calls WHERE id > %d" % calls_before)) < \
            n_live_missed - 1:
        if time.monotonic() > deadline:
            fail("drift: the store did not write %d missed calls (%s rows); store log:\n%s" %
                 (n_live_missed - 1, q("SELECT count(*) FROM appeal_calls WHERE id > %d" %
                                       calls_before),
                  "\n".join(l for l in d.lines if "store" in l)[-3000:]))
        time.sleep(0.2)
    d.stop()
    sim.send_signal(signal.SIGTERM)
    sim.wait(10)
    got = store_truth(q, events_before)
    check_drift(calls, d.live, got, seeded, q, out)
    kinds = [c["appeal"]["kind"] + ("-db" if c["appeal"].get("database") else "")
             for c in missed]
    print("no drift: %d missed calls (%s), dry run == store" %
          (len(missed), ", ".join("%d %s" % (kinds.count(k), k) for k in sorted(set(kinds)))))


def epoch(iso):
    """The report's "2026-06-17T13:10:00Z" (or "-") as seconds."""
    if not iso or iso == "-":
        return None
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def appeals_now(q):
    """number -> the appeal's urgency, client, title, manager, calls."""
    rows = json.loads(q(
        "SELECT COALESCE(json_agg(json_build_object('number', a.number, 'urgent', a.urgent,"
        " 'client', a.client_name, 'title', a.title, 'manager', e.login, 'type', t.name,"
        " 'calls', a.calls_count, 'deadline', floor(extract(epoch FROM a.deadline)),"
        " 'tags', (SELECT COALESCE(json_agg(g.tag ORDER BY g.tag), '[]') FROM appeal_tags g"
        "  WHERE g.appeal_id = a.id))), '[]') FROM appeals a"
        " JOIN appeal_types t ON t.id = a.type_id"
        " LEFT JOIN employees e ON e.id = a.manager_id"))
    return {r.pop("number"): r for r in rows}


def check_drift(calls, live, got, seeded, q, out):
    """Compares the dry run's report (calls) with the live verdicts and
    the store's events (got), and the appeals table at the end with the
    seeded appeals plus what the dry run predicts for them."""
    state = dict(seeded)  # number -> the appeal as the dry run predicts it
    new_by_index, errors = {}, []
    for c in calls:
        key, ap, ev = c["call"], c.get("appeal"), got.pop(c["call"], None)
        lv = live.get(key, {})
        if (lv.get("verdict"), lv.get("reason")) != (c["verdict"], c["reason"]):
            errors.append("call %s: live %s (%s), dry run %s (%s)" % (
                key, lv.get("verdict"), lv.get("reason"), c["verdict"], c["reason"]))
        if c["verdict"] != "missed" or not ap:
            if ev or c["verdict"] == "missed":
                errors.append("call %s (%s): dry run appeal %s, store %s" % (
                    key, c["verdict"], ap, ev))
            continue
        if ap["kind"] == "already":
            where = q("SELECT string_agg(a.number || ' ' || ac.call_key, ',') FROM appeal_calls"
                      " ac JOIN appeals a ON a.id = ac.appeal_id WHERE ac.pbx = 'office'"
                      " AND ac.call_key = '%s'" % key)
            if ev or where != "%s %s" % (ap.get("number"), key):
                errors.append("call %s: dry run 'already stored' in %s; the store wrote %s"
                              " and the call is in %s" % (key, ap.get("number"), ev, where))
            continue
        if not ev:
            errors.append("call %s: dry run %s, the store wrote nothing" % (key, ap))
            continue
        who = ap.get("client", "")
        several = re.match(r"several clients \((\d+)\)$", who)
        name = None if who == "unknown" or several else who
        urgent = ap.get("urgent") == "yes"
        if ap["kind"] == "new":
            number = ap.get("number")
            new_by_index[ap["index"]] = number
            manager = ap.get("manager")
            a = state[number] = {"urgent": urgent, "client": name, "title": ap.get("title"),
                                 "manager": None if manager == "-" else manager,
                                 "type": ap.get("type"), "calls": 1,
                                 "tags": sorted(set(t for t in ap.get("tags", "-").split(",")
                                                    if t not in ("", "-"))),
                                 "deadline": epoch(ap.get("deadline"))}
            kind = "appeal.created"
        elif ap["kind"] == "attach":
            number = ap["target"] if ap.get("database") else new_by_index.get(ap["target"])
            if number not in state:
                errors.append("call %s: dry run attaches to %s, which it never numbered" %
                              (key, ap["target"]))
                continue
            a = state[number] = dict(state[number])
            a["urgent"] = a["urgent"] or urgent
            if a["client"] is None:  # COALESCE(a.client_name, the match)
                a["client"] = name
            a["calls"] += 1
            kind = "appeal.updated"
        else:
            errors.append("call %s: unknown dry-run appeal kind %s" % (key, ap))
            continue
        want = {"kind": kind, "number": number, "title": a["title"], "urgent": a["urgent"],
                "client": a["client"], "candidates": int(several.group(1)) if several else 0,
                "manager": a["manager"], "type": a["type"], "tags": a["tags"],
                "deadline": a["deadline"]}
        diff = ["%s: dry run %r, store %r" % (k, v, ev[k]) for k, v in want.items()
                if ev[k] != v]
        if diff:
            errors.append("call %s (%s, dry run %s %s): %s" % (
                key, c.get("caller"), ap["kind"], ap.get("number") or ap.get("target"),
                "; ".join(diff)))
    for key, ev in got.items():
        errors.append("call %s: the store wrote %s %s, the dry run no appeal" %
                      (key, ev["kind"], ev["number"]))

    final = appeals_now(q)
    for n in sorted(set(final) | set(state)):
        if final.get(n) != state.get(n):
            errors.append("appeal %s at the end: dry run %s, database %s" %
                          (n, state.get(n), final.get(n)))
    if errors:
        fail("drift between the dry run and the store (%d):\n  %s\n--- dry run:\n%s" %
             (len(errors), "\n  ".join(errors[:25]), out))


def main():
    try:
        test_errors()
        pgdir, env = start_pg()
        test_database(pgdir, env)
        test_drift(pgdir, env)
        test_hep()
        test_transcripts()
        test_live_equals_replay()
    finally:
        cleanup()
    print("OK")


if __name__ == "__main__":
    main()
