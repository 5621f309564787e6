#!/usr/bin/env python3
"""End-to-end test of the widget channel: real PostgreSQL, the real daemon,
amisim replaying a missed call (tests/data/ami/no_answer.ami).

Usage: widget_e2e.py MISSEDCALLD AMISIM

1. tokens: --issue-token prints a token once and stores only its SHA-256;
   no token / a malformed one / an unknown one / a revoked one -> 401 with
   a JSON error and nothing else; an unknown login fails.
2. /healthz is 503 while the PBX is away, 200 once it is up, JSON with
   database, pbx and spool; /metrics has the families of issue 5.
3. a subscriber receives call.ringing (with the client card of the caller
   matched through a phone stored as "8 (916) 123-45-67") -> call.missed ->
   appeal.created in that order, ids strictly increasing.
4. a reconnect with Last-Event-ID gets exactly the events after it (from
   the in-memory ring), in order, with the same ids.
5. after a daemon restart, a reconnect from before the call gets the
   appeal event back from the durable outbox and an explicit stream.gap
   for the call events that were only in memory; ids keep increasing.
6. /v1/appeals lists the appeal with its filters; CORS only for allowed
   origins; a subscriber cap answers 503; request limits hold.
7. revoking a token closes the streams open with it (stream.cutoff),
   and their reconnect is refused.
8. a slow client lookup (the clients table locked in PostgreSQL) never
   holds call.ringing back: it goes out without the card (card_pending),
   and the card follows as call.card once the lookup returns.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from widget_env import (CLIENT_E164, CLIENT_NAME, PG_CLUSTER, SSE, SRC, TestFailure,  # noqa: E402
                        WidgetEnv, check, http_get, id_key)

MISSEDCALLD, AMISIM = sys.argv[1], sys.argv[2]
TRANSCRIPT = os.path.join(SRC, "tests", "data", "ami", "no_answer.ami")
BUSY = os.path.join(SRC, "tests", "data", "ami", "busy.ami")
ALLOWED = "http://crm.example.test"
MAX_SUBS = 4


def tokens(env):
    r = env.cli("--issue-token", "ivanov")
    tok = r.stdout.strip()
    check(len(tok) == 43 and all(c.isalnum() or c in "-_" for c in tok),
          "--issue-token prints one base64url token (256 bits)")
    stored = env.psql("SELECT encode(token_hash, 'hex') FROM widget_tokens t JOIN employees e"
                      " ON e.id = t.employee_id WHERE e.login = 'ivanov'")
    check(tok not in stored and len(stored) == 64, "only a SHA-256 of the token is stored")
    check(env.psql("SELECT count(*) FROM widget_tokens WHERE token_hash = sha256(convert_to('%s', 'UTF8'))"
                   % tok) == "1", "the stored hash is PostgreSQL's sha256() of the token")
    r = env.cli("--issue-token", "nobody", check_rc=False)
    check(r.returncode != 0 and "nobody" in r.stderr and not r.stdout.strip(),
          "--issue-token for an unknown login fails and prints no token")
    other = env.cli("--issue-token", "petrova").stdout.strip()
    r = env.cli("--revoke-token", "petrova")
    check("1 token revoked" in r.stdout, "--revoke-token removes the employee's token")
    return tok, other


def unauthorized(env, revoked):
    cases = [("no token", {}), ("malformed", {"Authorization": "Bearer nope"}),
             ("basic auth", {"Authorization": "Basic aXZhbm92OnB3"}),
             ("unknown", {"Authorization": "Bearer " + "A" * 43}),
             ("revoked", {"Authorization": "Bearer " + revoked})]
    for name, hdrs in cases:
        for path in ("/v1/events", "/v1/appeals"):
            status, h, body = http_get(env.widget_port, path, headers=hdrs)
            doc = json.loads(body)
            check(status == 401 and h.get("content-type", "").startswith("application/json")
                  and doc.get("error") == "unauthorized" and set(doc) == {"error", "message"}
                  and "bearer" in h.get("www-authenticate", "").lower(),
                  "%s %s -> 401 with a JSON error only" % (path, name))
    status, _, _ = http_get(env.widget_port, "/v1/events?token=" + "B" * 43)
    check(status == 401, "an unknown ?token= -> 401")


def health_and_metrics(env, ready):
    status, h, body = http_get(env.widget_port, "/healthz")
    doc = json.loads(body)
    check(h["content-type"].startswith("application/json") and
          {"status", "database", "pbx", "spool"} <= set(doc), "/healthz is JSON with database, pbx, spool")
    if ready:
        check(status == 200 and doc["status"] == "ready" and doc["database"]["state"] == "ready"
              and doc["pbx"]["ready"] is True and doc["pbx"]["connections"], "/healthz 200 when ready")
    else:
        check(status == 503 and doc["pbx"]["ready"] is False, "/healthz 503 while the PBX is away")


def metrics(env):
    status, h, body = http_get(env.widget_port, "/metrics")
    text = body.decode()
    check(status == 200 and h["content-type"].startswith("text/plain"), "/metrics answers text")
    for family in ("missedcalld_events_total", "missedcalld_calls_total",
                   "missedcalld_appeals_created_total", "missedcalld_appeals_deduplicated_total",
                   "missedcalld_db_errors_total", "missedcalld_spool_records",
                   "missedcalld_subscribers", "missedcalld_subscribers_dropped_total",
                   "missedcalld_hangup_to_commit_seconds", "missedcalld_hangup_to_push_seconds"):
        check("# TYPE %s " % family in text, "/metrics has %s" % family)
    counts = {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("missedcalld_hangup_to_push_seconds_count{")}
    check(counts.get('event="call.missed"', 0) >= 1 and counts.get('event="appeal"', 0) >= 1,
          "hangup_to_push observed the call.missed and the appeal event: %s" % counts)
    return text


def call_flow(env, tok):
    sub = SSE(env.widget_port, tok)
    check(sub.status == 200 and sub.resp.getheader("Content-Type").startswith("text/event-stream"),
          "GET /v1/events with a bearer token -> 200 text/event-stream")
    hello = sub.next()
    check(hello["event"] == "stream.hello" and hello["id"] and sub.retry, "stream.hello with an id, retry: sent")
    check(hello["data"]["employee"]["login"] == "ivanov", "the stream knows the token's employee")
    env.start_amisim("--replay", TRANSCRIPT)
    events = sub.until("appeal.created", 60)
    names = [e["event"] for e in events]
    print("events:", names, flush=True)
    calls = [e for e in events if e["event"].startswith(("call.", "appeal."))]
    order = [n for n in names if n in ("call.ringing", "call.missed", "appeal.created")]
    check(order == ["call.ringing", "call.missed", "appeal.created"], "ringing -> missed -> appeal.created")
    ids = [id_key(e["id"]) for e in calls]
    check(all(a < b for a, b in zip(ids, ids[1:])) and id_key(hello["id"]) < ids[0],
          "ids strictly increase")
    ring = next(e for e in events if e["event"] == "call.ringing")["data"]
    card = ring["card"]
    follow = [e["data"]["card"] for e in events if e["event"] == "call.card"]
    if card is None:
        check(ring["card_pending"] is True and follow, "a slow card follows as call.card")
        card = follow[0]
    check(ring["caller"]["e164"] == CLIENT_E164 and ring["caller"]["presented"] == "79161234567",
          "ringing carries the caller as E.164 and as presented")
    check(ring["did"] == "74951234567" and ring["pbx"] == "office" and ring["call_key"],
          "ringing carries pbx, call key and DID")
    check(card["match"] == "one" and card["clients"][0]["name"] == CLIENT_NAME,
          "the ringing card is the client matched by phone")
    missed = next(e for e in events if e["event"] == "call.missed")["data"]
    check(missed["reason"] == "no_answer" and missed["call_key"] == ring["call_key"]
          and missed["ring_seconds"] > 0, "call.missed with reason and ring seconds")
    created = events[-1]["data"]
    appeal = created["appeal"]
    number = env.psql("SELECT number FROM appeals")
    check(appeal["number"] == number and appeal["client"]["name"] == CLIENT_NAME and
          appeal["manager"]["login"] == "ivanov" and appeal["phone"] == CLIENT_E164 and
          appeal["type"] == "Пропущенный звонок" and appeal["status"] == "Новое" and appeal["deadline"],
          "appeal.created: number, client, manager, phone, type, status, deadline")
    check(created["outbox_id"] == int(env.psql("SELECT id FROM appeal_events WHERE kind = 'appeal.created'")),
          "the appeal event carries its outbox id")
    return sub, hello, calls


def reconnect_from_ring(env, tok, calls):
    # Resume right after the ringing: everything after it, nothing else.
    after = calls[0]
    sub = SSE(env.widget_port, tok, last_event_id=after["id"])
    got = []
    while not got or got[-1]["id"] != calls[-1]["id"]:
        ev = sub.next(20)
        if ev is None:
            raise TestFailure("stream ended during replay")
        if ev["event"] in ("stream.hello",):
            check(ev["id"] is None, "a resumed stream's hello carries no id")
            continue
        got.append(ev)
    want = [(e["event"], e["id"]) for e in calls[1:]]
    check([(e["event"], e["id"]) for e in got] == want,
          "Last-Event-ID replays exactly the missed events, same ids")
    # The next thing on the stream is a heartbeat comment, not an event.
    while True:
        line = sub.resp.readline()
        if line.startswith(b":"):
            break
        check(line.strip() == b"", "nothing but the heartbeat after the replay: %r" % line)
    sub.close()


def after_restart(env, tok, hello, calls):
    check(env.stop_daemon() == 0, "the daemon stops cleanly (SIGTERM)")
    env.start_daemon()
    env.wait_db_ready()  # the PBX (amisim) is gone: only the database matters here
    sub = SSE(env.widget_port, tok, last_event_id=hello["id"])
    got = [e for e in sub.until("stream.gap", 20) if e["event"] != "stream.hello"]
    replayed = got[:-1]
    # Every outbox row after the position is replayed, in order (the
    # deadline of a replayed 2026-06 call is long past, so the overdue
    # sweep may have added appeal.overdue rows).
    rows = env.psql("SELECT id || ' ' || kind FROM appeal_events WHERE id <= %d ORDER BY id"
                    % replayed[-1]["data"]["outbox_id"]).splitlines()
    check(["%d %s" % (e["data"]["outbox_id"], e["event"]) for e in replayed] == rows,
          "after a restart: every appeal event missed, from the outbox, in order")
    old = next(e for e in calls if e["event"] == "appeal.created")
    check(replayed[0]["event"] == "appeal.created" and
          replayed[0]["data"]["outbox_id"] == old["data"]["outbox_id"] and
          replayed[0]["data"]["appeal"]["number"] == old["data"]["appeal"]["number"],
          "the replayed appeal.created is the one missed")
    keys = [id_key(e["id"]) for e in replayed]
    check(keys[0] > id_key(calls[-1]["id"]) and all(a < b for a, b in zip(keys, keys[1:])) and
          [k[1] for k in keys] == [e["data"]["outbox_id"] for e in replayed],
          "ids keep increasing across the restart")
    gap = got[-1]
    check(gap["event"] == "stream.gap" and gap["id"] is None and gap["data"]["calls"] is True
          and gap["data"]["appeals"] is False, "then a stream.gap for the lost call events")
    # A fresh stream after the restart starts at the outbox's position,
    # though this process has published no appeal event yet.
    fresh = SSE(env.widget_port, tok)
    hello2 = fresh.next()
    check(id_key(hello2["id"])[1] == int(env.psql("SELECT max(id) FROM appeal_events")),
          "a fresh stream's id carries the outbox position after a restart")
    fresh.close()
    # Resuming from the last replayed event: nothing more is owed.
    sub2 = SSE(env.widget_port, tok, last_event_id=replayed[-1]["id"])
    ev = sub2.next()
    check(ev["event"] == "stream.hello", "resumed stream starts with hello")
    sub.close()
    sub2.close()


def quiet_stream_stays_open(env, tok):
    # request_timeout is 2 s and the client never sends a byte: the stream
    # must outlive it on heartbeats alone (heartbeat_seconds = 1).
    sub = SSE(env.widget_port, tok)
    sub.next()
    while sub.comments < 6:
        line = sub.resp.readline()
        if not line:
            raise TestFailure("a quiet stream was closed after %d heartbeats" % sub.comments)
        if line.startswith(b":"):
            sub.comments += 1
    check(True, "a quiet stream lives on heartbeats past request_timeout (6 heartbeats)")
    sub.close()


def revoke_open_stream(env):
    tok = env.cli("--issue-token", "petrova").stdout.strip()
    sub = SSE(env.widget_port, tok)
    check(sub.next()["data"]["employee"]["login"] == "petrova", "petrova's stream is open")
    env.cli("--revoke-token", "petrova")
    got = sub.until("stream.cutoff", 30)
    check(got[-1]["data"]["reason"] == "token revoked", "revoking closes the open stream (stream.cutoff)")
    check(sub.next(10) is None, "and the stream ends")
    status, _, _ = http_get(env.widget_port, "/v1/events", token=tok)
    check(status == 401, "its reconnect is refused")
    sub.close()


def slow_card(env, tok):
    sub = SSE(env.widget_port, tok)
    sub.next()
    # Hold an exclusive lock on clients: every card lookup waits behind it.
    locker = subprocess.Popen(["bash", PG_CLUSTER, "psql", env.pgdir, "-qAt"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    env.procs.append(locker)
    locker.stdin.write("BEGIN;\nLOCK TABLE clients IN ACCESS EXCLUSIVE MODE;\n")
    locker.stdin.flush()
    end = time.monotonic() + 20
    while env.psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                   " WHERE c.relname = 'clients' AND l.mode = 'AccessExclusiveLock' AND l.granted") != "1":
        if time.monotonic() > end:
            raise TestFailure("could not lock clients")
        time.sleep(0.05)
    env.amisim.kill()
    env.amisim.wait()
    # This PBX speaks cp1251: the caller's name is not UTF-8.
    with open(BUSY, "rb") as f:
        transcript = f.read().replace(b"CallerIDName: 79161234567", b"CallerIDName: \xcf\xe5\xf2\xf0")
    cp1251 = os.path.join(env.tmp, "busy_cp1251.ami")
    with open(cp1251, "wb") as f:
        f.write(transcript)
    env.start_amisim("--replay", cp1251)
    ringing = sub.until("call.ringing", 60)[-1]["data"]
    check("\ufffd" in (ringing["caller"].get("name") or ""),
          "a cp1251 caller name arrives repaired (U+FFFD), not dropped")
    check(ringing["card"] is None and ringing["card_pending"] is True,
          "a slow client lookup: call.ringing goes out without the card")
    locker.stdin.write("COMMIT;\n")
    locker.stdin.close()
    got = sub.until("call.card", 30)
    card = got[-1]["data"]
    check(card["call_key"] == ringing["call_key"] and card["card"]["match"] == "one" and
          card["card"]["clients"][0]["name"] == CLIENT_NAME, "the card follows as call.card")
    rest = sub.until("call.missed", 30)
    check(rest[-1]["data"]["reason"] == "busy", "then call.missed (busy)")
    ev = sub.next(30)
    while ev and not ev["event"].startswith("appeal."):
        ev = sub.next(30)
    check(ev and ev["data"]["call"]["call_key"] == ringing["call_key"],
          "and its appeal event (the cp1251 call is not lost)")
    locker.wait(10)
    sub.close()


def appeals_list(env, tok):
    status, h, body = http_get(env.widget_port, "/v1/appeals?open=1&manager=ivanov", token=tok)
    doc = json.loads(body)
    number = env.psql("SELECT number FROM appeals")
    check(status == 200 and [a["number"] for a in doc["appeals"]] == [number],
          "/v1/appeals lists the open appeal of the manager")
    _, _, body = http_get(env.widget_port, "/v1/appeals?manager=petrova", token=tok)
    check(json.loads(body)["appeals"] == [], "/v1/appeals?manager= filters")
    _, _, body = http_get(env.widget_port, "/v1/appeals?since=2999-01-01", token=tok)
    check(json.loads(body)["appeals"] == [], "/v1/appeals?since= filters")
    status, _, _ = http_get(env.widget_port, "/v1/appeals?since=yesterday", token=tok)
    check(status == 400, "a bad since= is a 400")
    status, _, _ = http_get(env.widget_port, "/v1/appeals?token=" + tok)
    check(status == 200, "?token= works for /v1/appeals too")


def cors(env, tok):
    status, h, _ = http_get(env.widget_port, "/v1/appeals", token=tok, headers={"Origin": ALLOWED})
    check(status == 200 and h.get("access-control-allow-origin") == ALLOWED, "CORS for an allowed origin")
    status, h, _ = http_get(env.widget_port, "/v1/appeals", token=tok,
                            headers={"Origin": "http://evil.example.test"})
    check(status == 403 and "access-control-allow-origin" not in h, "no CORS for other origins")


def reload_origins(env, tok):
    later = "http://later.example.test"
    conf = open(env.conf).read()
    with open(env.conf, "w") as f:
        f.write(conf.replace('allowed_origins = [ "%s" ]' % ALLOWED,
                             'allowed_origins = [ "%s", "%s" ]' % (ALLOWED, later)))
    sub = SSE(env.widget_port, tok)
    sub.next()
    env.daemon.send_signal(signal.SIGHUP)
    end = time.monotonic() + 20
    while True:
        status, h, _ = http_get(env.widget_port, "/v1/appeals", token=tok, headers={"Origin": later})
        if status == 200 or time.monotonic() > end:
            break
        time.sleep(0.1)
    check(status == 200 and h.get("access-control-allow-origin") == later,
          "SIGHUP applies a new allowed origin")
    while sub.comments < 2:
        line = sub.resp.readline()
        if not line:
            raise TestFailure("a stream was closed by the reload")
        if line.startswith(b":"):
            sub.comments += 1
    check(True, "open streams survive a reload")
    sub.close()


def limits(env, tok):
    subs = [SSE(env.widget_port, tok) for _ in range(MAX_SUBS)]
    for s in subs:
        s.next()
    extra = SSE(env.widget_port, tok)
    check(extra.status == 503 and json.loads(extra.resp.read())["error"] == "unavailable",
          "beyond max_subscribers -> 503 JSON")
    for s in subs:
        s.close()
    extra.close()
    # A request head larger than max_request_bytes is refused.
    s = socket.create_connection(("127.0.0.1", env.widget_port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    reply = s.recv(200)
    s.close()
    check(reply == b"" or reply.split(b" ")[1] in (b"400", b"413", b"431"),
          "an oversized request head is refused")
    # A client that never finishes its request is closed (request_timeout
    # = 2 s; the socket's own 20 s timeout would raise instead).
    s = socket.create_connection(("127.0.0.1", env.widget_port), timeout=20)
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    reply = s.recv(100)
    s.close()
    check(reply == b"" or reply.startswith(b"HTTP/1.1 4"), "an unfinished request is closed by the server")
    status, _, body = http_get(env.widget_port, "/widget/")
    check(status == 200 and b"widget.js" in body, "/widget/ serves the page")
    status, _, _ = http_get(env.widget_port, "/widget/../../etc/passwd")
    check(status in (400, 404), "no path traversal out of the page")


def main():
    env = WidgetEnv(MISSEDCALLD, AMISIM, "widget_e2e",
                    'allowed_origins = [ "%s" ]; max_subscribers = %d; max_connections = 64; '
                    'request_timeout = 2; max_request_bytes = 4096;' % (ALLOWED, MAX_SUBS))
    try:
        env.setup()
        tok, revoked = tokens(env)
        env.start_daemon()
        unauthorized(env, revoked)
        health_and_metrics(env, ready=False)
        sub, hello, calls = call_flow(env, tok)
        env.wait_ready()
        health_and_metrics(env, ready=True)
        metrics(env)
        reconnect_from_ring(env, tok, calls)
        sub.close()
        appeals_list(env, tok)
        cors(env, tok)
        reload_origins(env, tok)
        limits(env, tok)
        quiet_stream_stays_open(env, tok)
        revoke_open_stream(env)
        slow_card(env, tok)
        after_restart(env, tok, hello, calls)
        print("widget_e2e: all checks passed")
        return 0
    except TestFailure as e:
        print("FAIL:", e)
        print("---- daemon log (tail) ----")
        print(env.log()[-6000:])
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
