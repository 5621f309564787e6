#!/bin/bash
# Store against a real PostgreSQL (tests/lib/pg_cluster.sh): migrations and
# the version check, matching, idempotency, dedupe, numbering under
# concurrency, a database outage with 200 missed calls, kill -9 with a
# non-empty spool. Outcomes are fed through tests/tools/store_drive (the
# real store on a libevent loop).
set -euo pipefail

source "${MCD_SOURCE_ROOT:?}/tests/lib/pg_test.sh"
DRIVE=$BUILD/tests/tools/store_drive
[ -n "${STORE_TEST_KEEP:-}" ] && { trap - EXIT; echo "keeping T=$T PGDIR=$PGDIR"; }
q() { pg_cluster_psql "$PGDIR" -qAt -c "$1"; }
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; echo "ok: $3"; }

pg_cluster_start "$PGDIR"
mkdir -p "$T/state"
echo secret >"$T/secret"
cat >"$T/mcd.conf" <<EOF
daemon = { state_dir = "$T/state"; log_level = "info"; };
database = { conninfo = "$PG_CONNINFO"; reconnect_max = 1; connect_timeout = 2; fsync = "batch"; };
pbx = ( { name = "office"; type = "ami"; host = "127.0.0.1"; port = 5038; username = "u"; secret_file = "$T/secret"; } );
missed_calls = {
  manager = "ivanov"; tags = ["missed"]; sla_minutes = 60;
  specialists = ["petrova"];
  urgent = { vip_tag = "VIP"; repeat_count = 3; repeat_window_minutes = 60; };
  dedupe_window_minutes = 30;
  routes = ( { did = "74950002222"; appeal_type = "Заявка"; manager = "petrova"; ad_campaign = "Яндекс"; location = "Склад"; tags = ["sales"]; } );
};
EOF

# A store_drive fed from a FIFO; its stdout lines go to $T/NAME.out.
start_drive() { # NAME
	local n=$1
	rm -f "$T/$n.in"
	mkfifo "$T/$n.in"
	"$DRIVE" -c "$T/mcd.conf" <"$T/$n.in" >"$T/$n.out" 2>"$T/$n.err" &
	PIDS+=($!)
	eval "${n}_PID=$!"
	exec {fd}>"$T/$n.in"
	eval "${n}_FD=$fd"
}
send() { # NAME LINE...
	local n=$1 fdv
	shift
	fdv=${n}_FD
	printf '%s\n' "$@" >&"${!fdv}"
}
wait_line() { # NAME REGEX [TIMEOUT]
	local n=$1 re=$2 t=${3:-60} i=0
	while ! grep -qE "$re" "$T/$n.out" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt $((t * 10)) ] && { cat "$T/$n.err" >&2; fail "$n: no line /$re/ in ${t}s"; }
		sleep 0.1
	done
}
stop_drive() { # NAME
	local n=$1 fdv pidv
	fdv=${n}_FD pidv=${n}_PID
	send "$n" "#quit"
	exec {fdv}>&-
	wait "${!pidv}" || fail "$n exited with an error"
}
call() { # KEY CALLER [DID] [END]
	printf '{"pbx":"office","call_key":"%s","caller":"%s","did":"%s","start":%s,"end":%s,"ring":20,"reason":"no_answer"}' \
		"$1" "$2" "${3:-74950001111}" "$((${4:-$(date +%s)} - 20))" "${4:-$(date +%s)}"
}

# --- version check: a database never migrated is refused with the fix ---
start_drive d0
wait_line d0 "STATE incompatible"
grep -q "run .missedcalld -c FILE --migrate." "$T/d0.err" || fail "no --migrate hint"
echo "ok: unmigrated database refused with a --migrate hint"
send d0 "$(call never 89160000000)" "#sync"
wait_line d0 "SYNC spooled=1"
echo "ok: outcome spooled while incompatible"
stop_drive d0

"$DRIVE" -c "$T/mcd.conf" --migrate >"$T/migrate.out" || fail "migrate"
expect_eq "$(q 'SELECT max(version) FROM mcd_schema_version')" "$(grep -c . <(ls "$SRC"/appeals/migrations/*.sql))" "migrations applied from empty"
"$DRIVE" -c "$T/mcd.conf" --migrate >/dev/null || fail "migrate twice"

q "INSERT INTO mcd_schema_version (version, name) VALUES (999, 'future')"
start_drive d1
wait_line d1 "STATE incompatible"
grep -q "newer than this missedcalld" "$T/d1.err" || fail "no upgrade hint for a newer schema"
echo "ok: newer schema refused with an upgrade hint"
if "$DRIVE" -c "$T/mcd.conf" --migrate >"$T/migrate-newer.out" 2>&1; then fail "--migrate accepted a newer schema"; fi
grep -q "newer than this missedcalld knows" "$T/migrate-newer.out" || fail "--migrate on a newer schema: no message"
echo "ok: --migrate refuses to touch a newer schema"
q "DELETE FROM mcd_schema_version WHERE version = 999"
stop_drive d1

# --- CRM data ---
q "INSERT INTO appeal_statuses (name) VALUES ('Новое'), ('Входящий звонок');
   INSERT INTO appeal_statuses (name, is_closed) VALUES ('Закрыто', true);
   INSERT INTO appeal_types (name, initial_status_id) VALUES
     ('Пропущенный звонок', (SELECT id FROM appeal_statuses WHERE name = 'Новое')),
     ('Заявка', (SELECT id FROM appeal_statuses WHERE name = 'Входящий звонок'));
   INSERT INTO employees (login, name) VALUES ('ivanov', 'Иван Иванов'), ('petrova', 'Мария Петрова');
   INSERT INTO clients (name) VALUES ('Петров Пётр'), ('Сидоров'), ('Кузнецов');
   INSERT INTO client_tags VALUES (1, 'VIP');
   INSERT INTO client_phones (client_id, phone) VALUES
     (1, '8 (916) 123-45-67'), (1, 'доб. нет'),
     (2, '+7 999 000-00-01'), (3, '7 (999) 000 00 01 доб. 5');"
expect_eq "$(q "SELECT string_agg(coalesce(phone_e164, '-'), ',' ORDER BY id) FROM client_phones")" \
	"+79161234567,-,+79990000001,+79990000001" "client phones in any format normalised by the trigger"

# The SQL normalisation against every row of phones.tsv (the C module's
# single source of truth).
python3 - "$SRC/tests/data/phones.tsv" >"$T/phones.json" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("#"):
        continue
    f = line.split("\t")
    if len(f) >= 3:
        rows.append(f[:3])
print(json.dumps(rows))
PY
mismatch=$(pg_cluster_psql "$PGDIR" -qAt -F '|' -v "j=$(cat "$T/phones.json")" <<'SQL'
SELECT x->>0, x->>1, x->>2, mcd_phone_classify(x->>0, x->>1)
FROM jsonb_array_elements(:'j'::jsonb) x
WHERE mcd_phone_classify(x->>0, x->>1) IS DISTINCT FROM x->>2;
SQL
)
[ -z "$mismatch" ] || fail "SQL normalisation differs from phones.tsv: $mismatch"
rows=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/phones.json")
[ "$rows" -gt 100 ] || fail "phones.tsv has only $rows rows"
echo "ok: SQL normalisation matches all $rows rows of phones.tsv"
# A lookup by E.164 is an index probe, not a scan, even with many phones.
q "INSERT INTO client_phones (client_id, phone) SELECT 3, '8 (900) ' || lpad(g::text, 7, '0') FROM generate_series(1, 20000) g; ANALYZE client_phones"
q "EXPLAIN SELECT client_id FROM client_phones WHERE phone_e164 = '+79161234567'" | grep -q "Index" ||
	fail "client phone lookup does not use the index"
echo "ok: client phone lookup uses the index"

# --- names in the config the database lacks: refused with the names ---
sed 's/manager = "ivanov";/manager = "nobody"; appeal_type = "Нет такого типа";/' "$T/mcd.conf" >"$T/bad.conf"
cp "$T/mcd.conf" "$T/good.conf"
cp "$T/bad.conf" "$T/mcd.conf"
start_drive b1
wait_line b1 "STATE incompatible"
grep -q 'appeal types the database lacks (table appeal_types): "Нет такого типа"' "$T/b1.err" || fail "missing type not named"
grep -q 'employee logins the database lacks (table employees): "nobody"' "$T/b1.err" || fail "missing login not named"
echo "ok: config names missing in the database refused, named in the log"
stop_drive b1
cp "$T/good.conf" "$T/mcd.conf"

# --- the spooled outcome from before the migration, then the rules ---
start_drive d2
wait_line d2 "STATE ready"
send d2 "#drain"
wait_line d2 "DRAINED"
expect_eq "$(q "SELECT count(*) FROM appeal_calls WHERE call_key = 'never'")" 1 "outcome spooled before the migration replayed"

send d2 "$(call k1 '+7 916 123 45 67')" "$(call k1 '+7 916 123 45 67')" \
	"$(call k2 '89990000001')" "$(call k3 '74951112233' 74950002222)" "#drain"
wait_line d2 "DRAINED submitted=4"
expect_eq "$(q "SELECT count(*) FROM appeal_calls WHERE call_key = 'k1'")" 1 "same outcome twice -> one call row"
expect_eq "$(q "SELECT count(*) FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id WHERE c.call_key = 'k1'")" 1 "same outcome twice -> one appeal"
expect_eq "$(q "SELECT a.client_id || '|' || a.client_name || '|' || a.urgent || '|' || s.name || '|' || e.login || '|' || t.name FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id JOIN appeal_statuses s ON s.id = a.status_id JOIN employees e ON e.id = a.manager_id JOIN appeal_types t ON t.id = a.type_id WHERE c.call_key = 'k1'")" \
	"1|Петров Пётр|true|Новое|ivanov|Пропущенный звонок" "known VIP client: linked, urgent, type's initial status, manager"
expect_eq "$(q "SELECT title FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id WHERE c.call_key = 'k1'")" "Пропущенный звонок — Петров Пётр" "title with the client's name"
expect_eq "$(q "SELECT (a.client_id IS NULL) || '|' || (a.comment LIKE '%Сидоров (#2)%Кузнецов (#3)%') FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id WHERE c.call_key = 'k2'")" "true|true" "two clients on one number: not linked, candidates in the comment"
grep -q '"candidates": \[{"id": 2, "name": "Сидоров"}, {"id": 3, "name": "Кузнецов"}\]' "$T/d2.out" || fail "candidates not in the event"
echo "ok: candidates in the appeal.created event"
expect_eq "$(q "SELECT t.name || '|' || s.name || '|' || e.login || '|' || a.ad_campaign || '|' || a.location || '|' || (SELECT string_agg(tag, ',' ORDER BY tag) FROM appeal_tags WHERE appeal_id = a.id) FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id JOIN appeal_statuses s ON s.id = a.status_id JOIN employees e ON e.id = a.manager_id JOIN appeal_types t ON t.id = a.type_id WHERE c.call_key = 'k3'")" \
	"Заявка|Входящий звонок|petrova|Яндекс|Склад|missed,sales" "route by DID: type, status, manager, campaign, location, tags"
expect_eq "$(q "SELECT count(*) FROM appeal_specialists sp JOIN employees e ON e.id = sp.employee_id WHERE e.login = 'petrova'")" \
	"$(q "SELECT count(*) FROM appeals")" "specialists on every appeal"
expect_eq "$(q "SELECT count(*) FROM appeals WHERE deadline IS NULL")" 0 "deadlines set"

# Dedupe: two more calls from +74951112233 within the window attach, the
# third call in 60 minutes makes the appeal urgent.
send d2 "$(call k4 '84951112233' 74950002222)" "$(call k5 '+74951112233' 74950002222)" "#drain"
wait_line d2 "DRAINED submitted=6"
expect_eq "$(q "SELECT calls_count || '|' || urgent FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id WHERE c.call_key = 'k5'")" "3|true" "dedupe window: calls attached, third call urgent"
expect_eq "$(q "SELECT count(DISTINCT appeal_id) FROM appeal_calls WHERE phone = '+74951112233'")" 1 "one appeal for the repeated number"
grep -q "EVENT [0-9]* appeal.updated" "$T/d2.out" || fail "no appeal.updated event"
# A closed appeal is never attached to.
q "UPDATE appeals SET status_id = (SELECT id FROM appeal_statuses WHERE name = 'Закрыто') WHERE phone = '+74951112233'"
send d2 "$(call k6 '+74951112233' 74950002222)" "#drain"
wait_line d2 "DRAINED submitted=7"
expect_eq "$(q "SELECT count(DISTINCT appeal_id) FROM appeal_calls WHERE phone = '+74951112233'")" 2 "closed appeal: a new one is created"
# A call outside the window makes a new appeal.
send d2 "$(call k7 '+79161234567' 74950001111 $(($(date +%s) + 3600)))" "#drain"
wait_line d2 "DRAINED submitted=8"
expect_eq "$(q "SELECT count(DISTINCT appeal_id) FROM appeal_calls WHERE phone = '+79161234567'")" 2 "outside the dedupe window: a new appeal"

# A CRM constraint refusing one outcome of a batch: the others commit,
# the refused one is kept aside in rejected.jsonl with the reason.
q "ALTER TABLE appeals ADD CONSTRAINT crm_no_blacklisted CHECK (phone IS DISTINCT FROM '+79990009999')"
send d2 "$(call r1 '+79990009991')" "$(call r2 '+79990009999')" "$(call r3 '+79990009993')" "#drain"
wait_line d2 "DRAINED submitted=11"
expect_eq "$(q "SELECT string_agg(call_key, ',' ORDER BY call_key) FROM appeal_calls WHERE call_key IN ('r1', 'r2', 'r3')")" "r1,r3" "a refused outcome fails alone"
grep -q '"call_key":"r2"' "$T/state/rejected.jsonl" && grep -q crm_no_blacklisted "$T/state/rejected.jsonl" ||
	fail "refused outcome not kept in rejected.jsonl"
echo "ok: refused outcome kept in rejected.jsonl with the reason"
q "ALTER TABLE appeals DROP CONSTRAINT crm_no_blacklisted"

# Widget queries.
send d2 "#card +79161234567" "#events 0" "#appeals" "#lastid"
wait_line d2 "^LASTID $(q "SELECT max(id) FROM appeal_events")\$"
wait_line d2 '^CARD \[\{"id":1,"name":"Петров Пётр"'
wait_line d2 "^EVENTS first=1 "
wait_line d2 '^APPEALS \[\{'
echo "ok: client card, outbox replay, appeals list"
stop_drive d2

# --- deadline in business hours across a weekend, after-hours flag ---
sed 's/sla_minutes = 60;/sla_minutes = 60; business_hours = { enabled = true; timezone = "Europe\/Moscow"; days = ["mon", "tue", "wed", "thu", "fri"]; start = "09:00"; end = "18:00"; };/' "$T/good.conf" >"$T/mcd.conf"
start_drive bh
wait_line bh "STATE ready"
# Friday 2026-11-27 22:00 in Moscow (19:00 UTC), 60 minutes of working time:
# due Monday 2026-11-30 10:00 Moscow (07:00 UTC).
fri=$(date -u -d '2026-11-27 19:00:00' +%s)
send bh "$(call bh1 '+79161110000' 74950001111 "$fri")" "#drain"
wait_line bh "DRAINED submitted=1"
stop_drive bh
expect_eq "$(q "SELECT to_char(deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || '|' || after_hours FROM appeals a JOIN appeal_calls c ON c.appeal_id = a.id WHERE c.call_key = 'bh1'")" \
	"2026-11-30 07:00|true" "deadline in business hours across a weekend, after hours"
cp "$T/good.conf" "$T/mcd.conf"

# --- numbering under concurrency: two stores at once, 2 x 100 calls ---
for n in c1 c2; do start_drive $n; done
wait_line c1 "STATE ready"
wait_line c2 "STATE ready"
for i in $(seq 1 100); do
	send c1 "$(call "c1-$i" "+7916555$(printf %04d "$i")")"
	send c2 "$(call "c2-$i" "+7917555$(printf %04d "$i")")"
done
send c1 "#drain"
send c2 "#drain"
wait_line c1 "DRAINED submitted=100"
wait_line c2 "DRAINED submitted=100"
stop_drive c1
stop_drive c2
year=$(date -u +%Y)
expect_eq "$(q "SELECT count(*) = count(DISTINCT number) FROM appeals")" t "numbers unique"
expect_eq "$(q "SELECT max(substring(number from '(\d+)\$')::int) - min(substring(number from '(\d+)\$')::int) + 1 = count(*) FROM appeals WHERE number LIKE 'A-$year-%'")" t "numbering gap-free under concurrent writers"

# --- outage: stop the database, feed 200 missed calls, start it again ---
before=$(q "SELECT count(*) FROM appeal_calls")
start_drive f1
wait_line f1 "STATE ready"
pg_cluster_down "$PGDIR"
wait_line f1 "STATE backoff"
for i in $(seq 1 200); do send f1 "$(call "out-$i" "+7926000$(printf %04d "$i")")"; done
send f1 "#sync"
wait_line f1 "SYNC spooled=200 "
echo "ok: 200 outcomes spooled while the database is down"
pg_cluster_up "$PGDIR"
send f1 "#drain"
wait_line f1 "DRAINED submitted=200" 120
stop_drive f1
expect_eq "$(q "SELECT count(*) FROM appeal_calls WHERE call_key LIKE 'out-%'")" 200 "outage: exactly 200 calls recorded"
expect_eq "$(q "SELECT count(*) FROM appeal_calls")" "$((before + 200))" "outage: nothing doubled"

# --- kill -9 with a non-empty spool: nothing lost, nothing doubled ---
start_drive k1
wait_line k1 "STATE ready"
for i in $(seq 1 30); do send k1 "$(call "kill-$i" "+7927000$(printf %04d "$i")")"; done
send k1 "#drain"
wait_line k1 "DRAINED submitted=30"
pg_cluster_down "$PGDIR"
wait_line k1 "STATE backoff"
# 50 new calls plus the 30 already committed (a PBX resending them).
for i in $(seq 1 80); do send k1 "$(call "kill-$i" "+7927000$(printf %04d "$i")")"; done
send k1 "#sync"
wait_line k1 "SYNC spooled=80 "
kill -9 "$k1_PID"
wait "$k1_PID" 2>/dev/null || true
exec {k1_FD}>&-
pg_cluster_up "$PGDIR"
# Three appeals past their deadline: one appeal.overdue each, once.
q "UPDATE appeals SET deadline = now() - interval '5 minutes' WHERE id IN (SELECT id FROM appeals WHERE status_id = (SELECT id FROM appeal_statuses WHERE name = 'Новое') ORDER BY id LIMIT 3)"
start_drive k2
wait_line k2 "STATE ready"
send k2 "#drain"
wait_line k2 "DRAINED" 120
wait_line k2 "EVENT [0-9]+ appeal.overdue"
expect_eq "$(q "SELECT count(*) FROM appeals WHERE overdue_at IS NOT NULL")" 3 "overdue sweep marks appeals past their deadline"
stop_drive k2
grep -q "80 records from an earlier run to replay" "$T/k2.err" || fail "spool not recovered after kill -9"
expect_eq "$(q "SELECT count(*) FROM appeal_calls WHERE call_key LIKE 'kill-%'")" 80 "kill -9: nothing lost"
expect_eq "$(q "SELECT count(*) FROM (SELECT pbx, call_key FROM appeal_calls GROUP BY 1, 2 HAVING count(*) > 1) d")" 0 "kill -9: nothing doubled"
expect_eq "$(q "SELECT count(*) FROM appeal_events e WHERE kind = 'appeal.created'")" "$(q "SELECT count(*) FROM appeals")" "one appeal.created per appeal"
[ ! -s "$T/state/outcomes.spool" ] || fail "spool not compacted"
echo "ok: spool compacted"
start_drive k3
wait_line k3 "STATE ready"
send k3 "#events 0"
wait_line k3 "^EVENTS "
stop_drive k3
expect_eq "$(q "SELECT count(*) FROM appeal_events WHERE kind = 'appeal.overdue'")" 3 "one appeal.overdue event per appeal"
echo "store_db: all checks passed"
