#!/bin/bash
# Real-peer integration test of the HEP source: a real Kamailio (proxy and
# registrar on loopback, siptrace mirroring every message as HEPv3 to the
# daemon), real SIP calls placed and answered by sipp, the real daemon and a
# throwaway PostgreSQL. Each scenario is one real call; the appeals the
# daemon writes must match:
#
#   answered      callee answers after ringing         no appeal (answered by the AOR)
#   cancel        caller hangs up while it rings       appeal, reason caller_cancel
#   busy          callee rejects 486                   appeal, reason busy
#   noanswer      nobody answers, Kamailio times out   appeal, reason no_answer
#   decline       callee rejects 603                   appeal, reason declined
#   fork          two contacts ring, one answers       no appeal (the other branch is
#                                                      cancelled with Reason cause=200)
#   notfound      nobody registered: 404 from Kamailio no appeal (failed, not missed)
#
# Usage: run.sh MISSEDCALLD [udp|tcp]. Installs nothing (scripts/test installs what
# scripts/debian-packages lists); skips (77) when kamailio or sipp is
# missing. Bounded in time: every sipp runs under timeout, every wait has a
# deadline; everything started is stopped by the EXIT trap.
set -euo pipefail

MCD=${1:?usage: run.sh MISSEDCALLD}
SRC=${MCD_SOURCE_ROOT:?}
HERE=$SRC/tests/integration/kamailio
KAMAILIO=$(command -v kamailio || true)
SIPP=$(command -v sipp || true)
if [ -z "$KAMAILIO" ] || [ -z "$SIPP" ]; then
	echo "SKIP: kamailio or sipp (sip-tester) not installed"
	exit 77
fi
source "$SRC/tests/lib/pg_cluster.sh"

T=$(mktemp -d)
PGDIR=$(mktemp -d)
PIDS=()
KAM_PID=
MCD_PID=
cleanup() {
	local rc=$?
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -n "$KAM_PID" ] && kill "$KAM_PID" 2>/dev/null || true
	[ -n "$MCD_PID" ] && kill "$MCD_PID" 2>/dev/null || true
	for p in "${PIDS[@]}" $KAM_PID $MCD_PID; do wait "$p" 2>/dev/null || true; done
	pg_cluster_stop "$PGDIR" >/dev/null 2>&1 || true
	if [ $rc -ne 0 ] && [ -z "${HEP_TEST_KEEP:-}" ]; then
		echo "--- daemon log (tail) ---"; tail -40 "$T/missedcalld.log" 2>/dev/null || true
		echo "--- kamailio log (tail) ---"; tail -20 "$T/kamailio.log" 2>/dev/null || true
		for f in "$T"/*errors.log; do [ -f "$f" ] && { echo "--- $f ---"; head -30 "$f"; }; done
	fi
	[ -z "${HEP_TEST_KEEP:-}" ] && rm -rf "$T"
	exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
q() { pg_cluster_psql "$PGDIR" -qAt -c "$1"; }

# Distinct free UDP ports on 127.0.0.1 (held open together while chosen).
free_udp_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Waits until FILE has a line matching REGEX (polled; the file is a log).
wait_line() { # FILE REGEX TIMEOUT WHAT
	local deadline=$((SECONDS + $3))
	until grep -qE "$2" "$1" 2>/dev/null; do
		[ $SECONDS -ge $deadline ] && fail "$4: no /$2/ in $(basename "$1") after $3 s"
		sleep 0.2
	done
}

# A second argument "tcp" runs the same calls with Kamailio sending HEP
# over TCP (messages framed back to back by their length).
HEP_TRANSPORT=${2:-udp}
case $HEP_TRANSPORT in udp | tcp) ;; *) fail "transport must be udp or tcp" ;; esac
read -r SIP_PORT HEP_PORT TRUNK_PORT REG_PORT UAS1 UAS2 UAS3 UAS4 UAS5 UAS6 UAS7 <<<"$(free_udp_ports 11)"
HEP_KEY="hep-$RANDOM-$RANDOM"
CAPTURE_ID=2001

# --- PostgreSQL with the CRM data the appeal rules name ---
pg_cluster_start "$PGDIR" >/dev/null
mkdir -p "$T/state" "$T/run"
printf '%s\n' "$HEP_KEY" >"$T/hep.key"
cat >"$T/missedcalld.conf" <<EOF
daemon = { state_dir = "$T/state"; log_level = "debug"; };
database = { conninfo = "$PG_CONNINFO"; };
widget = { enabled = false; };
calls = { min_ring_seconds = 1; decide_grace_ms = 200; };
missed_calls = { manager = "ivanov"; dedupe_window_minutes = 30; };
pbx = ( {
  name = "kamailio"; type = "hep";
  listen = [ "$HEP_TRANSPORT:127.0.0.1:$HEP_PORT" ];
  auth_key_file = "$T/hep.key";
  capture_id = $CAPTURE_ID;
  # The carrier: calls from this SIP source are inbound.
  trunks = [ "127.0.0.1:$TRUNK_PORT" ];
  sip_call_timeout = 120;
} );
EOF
"$MCD" -c "$T/missedcalld.conf" --check-config >/dev/null || fail "config rejected"
"$MCD" -c "$T/missedcalld.conf" --migrate >"$T/migrate.log" 2>&1 || { cat "$T/migrate.log"; fail "--migrate"; }
q "INSERT INTO appeal_statuses (name) VALUES ('Новое');
   INSERT INTO appeal_types (name, initial_status_id) VALUES
     ('Пропущенный звонок', (SELECT id FROM appeal_statuses WHERE name = 'Новое'));
   INSERT INTO employees (login, name) VALUES ('ivanov', 'Иван Иванов');"
ok "database migrated, CRM data in place"

# --- the daemon ---
env -u JOURNAL_STREAM -u NOTIFY_SOCKET "$MCD" -c "$T/missedcalld.conf" >"$T/missedcalld.log" 2>&1 &
MCD_PID=$!
wait_line "$T/missedcalld.log" "HEP listening on $HEP_TRANSPORT:127.0.0.1:$HEP_PORT" 30 "daemon start"
wait_line "$T/missedcalld.log" "store: .* -> ready" 60 "store ready"
ok "daemon listening for HEP on $HEP_TRANSPORT:127.0.0.1:$HEP_PORT"

# --- Kamailio ---
HEP_URI_PARAMS=
TCP_LISTEN=
if [ "$HEP_TRANSPORT" = tcp ]; then
	HEP_URI_PARAMS=";transport=tcp"
	TCP_LISTEN="listen=tcp:127.0.0.1:$SIP_PORT"
fi
sed -e "s/@SIP_PORT@/$SIP_PORT/g; s/@HEP_PORT@/$HEP_PORT/g; s/@NOANSWER_MS@/4000/g" \
	-e "s/@HEP_URI_PARAMS@/$HEP_URI_PARAMS/g; s/@TCP_LISTEN@/$TCP_LISTEN/g" \
	-e "s/@CAPTURE_ID@/$CAPTURE_ID/g; s/@HEP_KEY@/$HEP_KEY/g" \
	"$HERE/kamailio.cfg.in" >"$T/kamailio.cfg"
"$KAMAILIO" -c -f "$T/kamailio.cfg" >"$T/kamailio-check.log" 2>&1 ||
	{ cat "$T/kamailio-check.log"; fail "kamailio rejects its configuration"; }
(cd "$T" && exec "$KAMAILIO" -f "$T/kamailio.cfg" -m 64 -M 8 -DD -E -Y "$T/run" \
	-P "$T/run/kamailio.pid" >"$T/kamailio.log" 2>&1) &
KAM_PID=$!
wait_line "$T/kamailio.log" "SO_RCVBUF is finally" 30 "kamailio start"
ok "kamailio on udp:127.0.0.1:$SIP_PORT mirroring HEP"

# --- sipp helpers ---
SIPP_OPTS=(-nostdin -trace_err -timeout 25s -timeout_error)
for code in 486 603; do
	sed "s/@CODE@/$code/" "$HERE/uas_reject.xml" >"$T/uas_reject_$code.xml"
done
register() { # AOR CONTACT_PORT
	(cd "$T" && timeout 30 "$SIPP" "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" \
		-p "$REG_PORT" -m 1 -key aor "$1" -key cport "$2" "${SIPP_OPTS[@]}" \
		>"$T/register-$1-$2.log" 2>&1) || fail "REGISTER $1 -> :$2"
}
UAS_PIDS=()
callee() { # SCENARIO_FILE PORT AOR
	(cd "$T" && exec timeout 40 "$SIPP" -sf "$1" -p "$2" -m 1 -key aor "$3" \
		"${SIPP_OPTS[@]}" >"$T/uas-$2.log" 2>&1) &
	UAS_PIDS+=($!)
	PIDS+=($!)
}
call() { # SCENARIO_FILE AOR CALLID_PREFIX CALLER
	(cd "$T" && timeout 40 "$SIPP" "127.0.0.1:$SIP_PORT" -sf "$1" -p "$TRUNK_PORT" -m 1 \
		-s "$2" -cid_str "$3-%u-%p" -key caller "$4" "${SIPP_OPTS[@]}" \
		>"$T/uac-$3.log" 2>&1) || fail "$3: the caller's sipp failed"
}
callees_done() { # WHAT
	local p
	for p in "${UAS_PIDS[@]}"; do
		wait "$p" || fail "$1: a callee's sipp failed"
	done
	UAS_PIDS=()
}

# --- the calls (each callee its own AOR and port) ---
register 7101 "$UAS1"; callee "$HERE/uas_answer.xml" "$UAS1" 7101
call "$HERE/uac_call.xml" 7101 hep-answered +79161000001; callees_done answered
ok "call placed: answered"

register 7102 "$UAS2"; callee "$HERE/uas_ring.xml" "$UAS2" 7102
call "$HERE/uac_cancel.xml" 7102 hep-cancel +79161000002; callees_done cancel
ok "call placed: caller cancel"

register 7103 "$UAS3"; callee "$T/uas_reject_486.xml" "$UAS3" 7103
call "$HERE/uac_call.xml" 7103 hep-busy +79161000003; callees_done busy
ok "call placed: busy"

register 7104 "$UAS4"; callee "$HERE/uas_ring.xml" "$UAS4" 7104
call "$HERE/uac_call.xml" 7104 hep-noanswer +79161000004; callees_done noanswer
ok "call placed: no answer"

register 7105 "$UAS5"; callee "$T/uas_reject_603.xml" "$UAS5" 7105
call "$HERE/uac_call.xml" 7105 hep-decline +79161000005; callees_done decline
ok "call placed: decline"

register 7106 "$UAS6"; register 7106 "$UAS7"
callee "$HERE/uas_answer.xml" "$UAS6" 7106; callee "$HERE/uas_ring.xml" "$UAS7" 7106
call "$HERE/uac_call.xml" 7106 hep-fork +79161000006; callees_done fork
ok "call placed: parallel fork, one branch answers"

call "$HERE/uac_call.xml" 7199 hep-notfound +79161000007
ok "call placed: 404 from the proxy"

# A burst: 200 answered calls at 50 calls/s (about 3000 HEP datagrams).
BURST=200
register 7107 "$UAS1"
(cd "$T" && exec timeout 60 "$SIPP" -sf "$HERE/uas_answer.xml" -p "$UAS1" -m $BURST \
	-key aor 7107 "${SIPP_OPTS[@]}" >"$T/uas-burst.log" 2>&1) &
UAS_PIDS+=($!)
PIDS+=($!)
(cd "$T" && timeout 60 "$SIPP" "127.0.0.1:$SIP_PORT" -sf "$HERE/uac_call.xml" -p "$TRUNK_PORT" \
	-m $BURST -r 50 -l 200 -s 7107 -cid_str "hep-burst-%u-%p" -key caller +79161000008 \
	"${SIPP_OPTS[@]}" >"$T/uac-burst.log" 2>&1) || fail "burst: the caller's sipp failed"
callees_done burst
ok "burst placed: $BURST calls at 50 calls/s"

# --- the daemon's decisions: the tracker logs one line per inbound call,
# `inbound call KEY: VERDICT (REASON)[ by EXTENSION]` (debug level for
# answered calls), the same contract the AMI integration test reads.
expect_outcome() { # PREFIX "VERDICT (REASON)[ by EXT]" WHAT
	wait_line "$T/missedcalld.log" "inbound call $1-[^:]*: " 30 "$1 decided"
	local got
	got=$(sed -nE "s/.*inbound call $1-[^:]*: (.*)$/\1/p" "$T/missedcalld.log" | head -1)
	[ "$got" = "$2" ] || fail "$1: outcome '$got', want '$2' ($3)"
	[ "$(grep -cE "inbound call $1-[^:]*: " "$T/missedcalld.log")" = 1 ] ||
		fail "$1: decided more than once"
	ok "$1: $3"
}
expect_outcome hep-answered "answered (none) by 7101" "inbound, answered by 7101"
expect_outcome hep-cancel "missed (caller_cancel)" "inbound, missed: caller_cancel"
expect_outcome hep-busy "missed (busy)" "inbound, missed: busy"
expect_outcome hep-noanswer "missed (no_answer)" "inbound, missed: no_answer"
expect_outcome hep-decline "missed (declined)" "inbound, missed: declined"
expect_outcome hep-fork "answered (none) by 7106" "inbound, answered by one fork branch"
expect_outcome hep-notfound "failed (unknown)" "inbound, failed (not missed)"

wait_line "$T/missedcalld.log" "inbound call hep-burst-$BURST-" 30 "the last burst call decided"
deadline=$((SECONDS + 30))
while :; do
	n=$(grep -cE "inbound call hep-burst-[^:]*: answered \(none\) by 7107$" "$T/missedcalld.log" || true)
	[ "$n" -ge $BURST ] && break
	[ $SECONDS -ge $deadline ] && fail "burst: $n of $BURST calls decided answered"
	sleep 0.3
done
[ "$(grep -cE "inbound call hep-burst-" "$T/missedcalld.log")" = $BURST ] ||
	fail "burst: a call decided twice or not answered"
ok "burst: all $BURST calls decided answered, none lost"

# --- the appeals in PostgreSQL ---
deadline=$((SECONDS + 60))
until [ "$(q "SELECT count(*) FROM appeal_calls WHERE pbx = 'kamailio'")" = 4 ]; do
	[ $SECONDS -ge $deadline ] && fail "expected 4 missed calls in appeal_calls, have $(q "SELECT count(*) FROM appeal_calls")"
	sleep 0.3
done
row() { # PREFIX -> reason|phone|did|appeal type|status|manager
	q "SELECT c.reason || '|' || c.phone || '|' || c.did || '|' || t.name || '|' || s.name || '|' || e.login
	   FROM appeal_calls c JOIN appeals a ON a.id = c.appeal_id
	   JOIN appeal_types t ON t.id = a.type_id JOIN appeal_statuses s ON s.id = a.status_id
	   JOIN employees e ON e.id = a.manager_id
	   WHERE c.pbx = 'kamailio' AND c.call_key LIKE '$1-%'"
}
expect_row() { # PREFIX WANT
	local got
	got=$(row "$1")
	[ "$got" = "$2" ] || fail "$1: appeal '$got', want '$2'"
	ok "$1: appeal $2"
}
expect_row hep-cancel "caller_cancel|+79161000002|7102|Пропущенный звонок|Новое|ivanov"
expect_row hep-busy "busy|+79161000003|7103|Пропущенный звонок|Новое|ivanov"
expect_row hep-noanswer "no_answer|+79161000004|7104|Пропущенный звонок|Новое|ivanov"
expect_row hep-decline "declined|+79161000005|7105|Пропущенный звонок|Новое|ivanov"
for p in hep-answered hep-fork hep-notfound; do
	[ "$(q "SELECT count(*) FROM appeal_calls WHERE call_key LIKE '$p-%'")" = 0 ] ||
		fail "$p: an appeal for a call that was not missed"
done
ok "no appeal for the answered, forked-and-answered and failed calls"
[ "$(q "SELECT count(*) FROM appeals WHERE origin = 'missed_call'")" = 4 ] ||
	fail "expected 4 appeals, have $(q "SELECT count(*) FROM appeals")"
ok "4 appeals, one per missed call"

# --- what the listener counted; nothing was malformed ---
grep -q "HEP packet from .* dropped" "$T/missedcalld.log" &&
	fail "the daemon dropped HEP packets from Kamailio"
ok "no HEP packet dropped"

# --- a clean stop ---
kill -TERM "$MCD_PID"
rc=0
wait "$MCD_PID" || rc=$?
MCD_PID=
[ $rc -eq 0 ] || fail "missedcalld exited $rc on SIGTERM"
if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$T/missedcalld.log"; then
	fail "sanitizer report in the daemon log"
fi
ok "daemon stopped cleanly"
echo "PASS: real SIP calls through Kamailio became the right appeals"
