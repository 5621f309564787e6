#!/bin/bash
# The real daemon, the fake AMI server (amisim) and a real PostgreSQL:
#   1. migrate with `missedcalld --migrate`, then missed calls become
#      complete appeals;
#   2. outage: the database stops, 200 missed calls arrive, the database
#      starts again -> exactly 200 calls recorded, none twice;
#   3. kill -9 while the spool holds outcomes, restart -> nothing lost,
#      nothing doubled;
#   4. kill -9 while the database is up but its commits stall (a lock on
#      appeals): the outcomes in flight were written ahead to the spool,
#      so a restart records every one of them, once.
set -euo pipefail

source "${MCD_SOURCE_ROOT:?}/tests/lib/pg_test.sh"
MCD=$BUILD/daemon/missedcalld
AMISIM=$BUILD/tests/tools/amisim

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done
	exit 1
}
q() { pg_cluster_psql "$PGDIR" -qAt -c "$1"; }
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; echo "ok: $3"; }
# Polls until a command prints VALUE (the daemon and the database are
# separate processes: there is no event to wait on but their output).
wait_for() { # DESCRIPTION VALUE TIMEOUT COMMAND...
	local what=$1 want=$2 t=$3 i=0
	shift 3
	while [ "$("$@" 2>/dev/null || true)" != "$want" ]; do
		i=$((i + 1))
		[ $i -gt $((t * 10)) ] && fail "$what: wanted $want, have $("$@" 2>/dev/null || true)"
		sleep 0.1
	done
}
missed_in_log() { grep -c "inbound call .*: missed" "$1" || true; }
calls_of() { q "SELECT count(*) FROM appeal_calls WHERE pbx = '$1'"; }

start_amisim() { # NAME CALLS SEED
	"$AMISIM" -p 0 -u admin -s s3cret --simulate --calls "$2" --seed "$3" \
		--mix noanswer=1 --rate 400 --time-scale 0.01 --linger -1 \
		>"$T/$1.port" 2>"$T/$1.amisim.log" &
	PIDS+=($!)
	wait_for "amisim $1 port" 1 10 grep -c "^PORT=" "$T/$1.port"
	sed -n 's/^PORT=//p' "$T/$1.port"
}

write_conf() { # NAME PORT
	cat >"$T/$1.conf" <<EOF
daemon = { state_dir = "$T/state"; log_level = "info"; };
database = { conninfo = "$PG_CONNINFO"; reconnect_max = 1; connect_timeout = 2; fsync = "batch"; };
widget = { enabled = false; };
pbx = ( { name = "$1"; type = "ami"; host = "127.0.0.1"; port = $2; username = "admin";
          secret_file = "$T/secret"; trunks = ["PJSIP/provider"]; } );
missed_calls = { tags = ["missed"]; sla_minutes = 30; dedupe_window_minutes = 0; };
EOF
}

kill9() { kill -9 "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; }

start_daemon() { # NAME LOG
	"$MCD" -c "$T/$1.conf" >>"$T/$2.log" 2>&1 &
	DAEMON=$!
	PIDS+=($DAEMON)
}

pg_cluster_start "$PGDIR"
mkdir -p "$T/state"
echo s3cret >"$T/secret"

# --- 1. migrate, then appeals ---
port=$(start_amisim office 20 1)
write_conf office "$port"
"$MCD" -c "$T/office.conf" --migrate >"$T/migrate.log" || fail "--migrate"
expect_eq "$(q 'SELECT max(version) FROM mcd_schema_version')" "$(ls "$SRC"/appeals/migrations/*.sql | wc -l)" "missedcalld --migrate"
q "INSERT INTO appeal_statuses (name) VALUES ('Новое');
   INSERT INTO appeal_types (name, initial_status_id) VALUES ('Пропущенный звонок', 1)"
start_daemon office d1
wait_for "20 appeals" 20 60 calls_of office
expect_eq "$(q "SELECT count(*) FROM appeals a JOIN appeal_statuses s ON s.id = a.status_id
	WHERE s.name = 'Новое' AND a.number ~ '^A-[0-9]{4}-[0-9]{6}$' AND a.title LIKE 'Пропущенный звонок — +7%'
	AND a.phone LIKE '+7%' AND a.deadline > a.created_at AND a.source = 'Телефония'
	AND a.comment = 'Пропущенный' AND EXISTS (SELECT 1 FROM appeal_tags t WHERE t.appeal_id = a.id AND t.tag = 'missed')")" 20 \
	"missed calls through the real daemon are complete appeals"

# --- reload: rules naming a type the database lacks are refused; the old config stays ---
sed -i 's/missed_calls = { /missed_calls = { appeal_type = "Нет такого типа"; /' "$T/office.conf"
kill -HUP "$DAEMON"
wait_for "reload refused for the missing type" 1 30 grep -c 'reload refused: .*appeal types the database lacks (table appeal_types): "Нет такого типа"' "$T/d1.log"
expect_eq "$(grep -c -- '-> incompatible' "$T/d1.log" || true)" 0 "refused reload: the store keeps working on the old config"
sed -i 's/appeal_type = "Нет такого типа"; //' "$T/office.conf"
sed -i 's/sla_minutes = 30;/sla_minutes = 45;/' "$T/office.conf"
kill -HUP "$DAEMON"
wait_for "a good reload is applied" 1 30 grep -c "configuration reloaded" "$T/d1.log"
sed -i 's/sla_minutes = 45;/sla_minutes = 30;/' "$T/office.conf"
echo "ok: reload with the fixed config applied"

# --- 2. outage with the daemon running ---
pg_cluster_down "$PGDIR"
port=$(start_amisim outage 200 2)
kill9
sed -i "s/port = [0-9]*;/port = $port;/; s/name = \"office\"/name = \"outage\"/" "$T/office.conf"
mv "$T/office.conf" "$T/outage.conf"
start_daemon outage d2
wait_for "200 calls decided while the database is down" 200 120 missed_in_log "$T/d2.log"
[ -s "$T/state/outcomes.spool" ] || fail "nothing spooled"
echo "ok: 200 missed calls decided and spooled during the outage"
pg_cluster_up "$PGDIR"
wait_for "200 calls after the outage" 200 120 calls_of outage
expect_eq "$(q "SELECT count(DISTINCT call_key) FROM appeal_calls WHERE pbx = 'outage'")" 200 "outage: 200 distinct calls, none twice"
wait_for "spool compacted" 0 30 stat -c %s "$T/state/outcomes.spool"

# --- 3. kill -9 with a non-empty spool ---
pg_cluster_down "$PGDIR"
port=$(start_amisim crash 100 3)
kill9
sed -i "s/port = [0-9]*;/port = $port;/; s/name = \"outage\"/name = \"crash\"/" "$T/outage.conf"
mv "$T/outage.conf" "$T/crash.conf"
start_daemon crash d3
wait_for "100 calls decided" 100 120 missed_in_log "$T/d3.log"
kill9
[ -s "$T/state/outcomes.spool" ] || fail "spool empty before the restart"
echo "ok: daemon killed with outcomes in the spool"
pg_cluster_up "$PGDIR"
start_daemon crash d4
wait_for "100 calls after the crash" 100 120 calls_of crash
grep -q "records from an earlier run to replay" "$T/d4.log" || fail "spool not replayed at start-up"
expect_eq "$(q "SELECT count(*) FROM (SELECT pbx, call_key FROM appeal_calls GROUP BY 1, 2 HAVING count(*) > 1) x")" 0 "kill -9: nothing doubled"
expect_eq "$(q "SELECT count(*) FROM appeals")" 320 "kill -9: nothing lost (20 + 200 + 100 appeals)"
expect_eq "$(q "SELECT count(*) FROM appeal_events WHERE kind = 'appeal.created'")" 320 "one outbox event per appeal"

# --- 4. kill -9 while the database is up but commits stall ---
kill "$DAEMON"
wait "$DAEMON" 2>/dev/null || true
pg_cluster_psql "$PGDIR" -qAt -c "BEGIN; LOCK TABLE appeals IN EXCLUSIVE MODE; SELECT pg_sleep(300);" \
	>/dev/null 2>&1 &
LOCKER=$!
PIDS+=($LOCKER)
wait_for "appeals locked" 1 30 q "SELECT count(*) FROM pg_locks WHERE relation = 'appeals'::regclass AND mode = 'ExclusiveLock' AND granted"
port=$(start_amisim stall 50 4)
sed "s/port = [0-9]*;/port = $port;/; s/name = \"crash\"/name = \"stall\"/" "$T/crash.conf" >"$T/stall.conf"
start_daemon stall d5
wait_for "50 calls decided while commits stall" 50 120 missed_in_log "$T/d5.log"
expect_eq "$(calls_of stall)" 0 "stall: nothing committed yet"
kill9
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()" >/dev/null
wait "$LOCKER" 2>/dev/null || true
start_daemon stall d6
wait_for "50 calls after the stalled crash" 50 120 calls_of stall
expect_eq "$(q "SELECT count(*) FROM (SELECT pbx, call_key FROM appeal_calls GROUP BY 1, 2 HAVING count(*) > 1) x")" 0 "stall: nothing doubled"
expect_eq "$(q "SELECT count(*) FROM appeals")" 370 "stall: nothing lost (320 + 50 appeals)"
kill "$DAEMON"
wait "$DAEMON" 2>/dev/null || true
echo "store_daemon: all checks passed"
