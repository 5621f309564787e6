#!/usr/bin/env bash
# The command line: exit codes, --check-config on the shipped example and on
# broken files (every problem, FILE:LINE: key: message), --print-config
# redaction. Usage: foundation_cli.sh BINARY
set -euo pipefail
BIN=$1
SRC=${MCD_SOURCE_ROOT:?}
TMP=$(mktemp -d /tmp/mcd-cli-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
unset CREDENTIALS_DIRECTORY LISTEN_FDS LISTEN_PID NOTIFY_SOCKET WATCHDOG_USEC

fail() { echo "FAIL: $*" >&2; exit 1; }
# run CMD...: sets $out (stdout+stderr) and $rc
run() { set +e; out=$("$@" 2>&1); rc=$?; set -e; }

run "$BIN" --version
[ $rc -eq 0 ] && [[ $out =~ ^missedcalld\ [0-9]+\.[0-9]+ ]] || fail "--version: $rc $out"
run "$BIN" --help
[ $rc -eq 0 ] && grep -q -- "--check-config" <<<"$out" || fail "--help: $rc"
run "$BIN" --no-such-option
[ $rc -eq 2 ] || fail "unknown option exits $rc, expected 2"
run "$BIN" -c /dev/null stray-argument
[ $rc -eq 2 ] || fail "stray argument exits $rc, expected 2"
run "$BIN" --check-config --print-config
[ $rc -eq 2 ] || fail "two commands exit $rc, expected 2"
echo "ok: usage exit codes"

# The example passes with the secret it names provided as a credential.
mkdir "$TMP/creds"
echo "amisecret" >"$TMP/creds/ami-office"
run env CREDENTIALS_DIRECTORY="$TMP/creds" "$BIN" --check-config -c "$SRC/conf/missedcalld.conf"
[ $rc -eq 0 ] && [ "$out" = OK ] || fail "example: rc=$rc: $out"
run env CREDENTIALS_DIRECTORY="$TMP/creds" "$BIN" -t -c "$SRC/conf/missedcalld.conf"
[ $rc -eq 0 ] || fail "-t on the example: $rc"
echo "ok: the example passes --check-config"

# --check-config touches no network: not a single socket is opened
# (strace; LeakSanitizer cannot run under ptrace).
if strace -o /dev/null true 2>/dev/null; then
	run env CREDENTIALS_DIRECTORY="$TMP/creds" ASAN_OPTIONS=detect_leaks=0 \
		strace -f -qq -e trace=socket,connect,bind,sendto,sendmsg -o "$TMP/strace.log" \
		"$BIN" --check-config -c "$SRC/conf/missedcalld.conf"
	[ $rc -eq 0 ] || fail "check-config under strace: $out"
	[ ! -s "$TMP/strace.log" ] || fail "--check-config used the network: $(cat "$TMP/strace.log")"
	echo "ok: --check-config opens no socket"
else
	echo "note: strace cannot trace here; network-free check skipped"
fi

# Without it: exit 3 and the problem names file, line and key.
run "$BIN" --check-config -c "$SRC/conf/missedcalld.conf"
[ $rc -eq 3 ] || fail "example without secret exits $rc"
grep -Eq "missedcalld.conf:[0-9]+: pbx\[0\]\.secret_file: .*ami-office" <<<"$out" || fail "no secret_file problem: $out"
echo "ok: missing secret reported"

# Every problem at once, one per line, FILE:LINE: key: message.
run "$BIN" -t -c "$SRC/tests/data/cfg/many.conf"
[ $rc -eq 3 ] || fail "many.conf exits $rc"
[ "$(grep -c . <<<"$out")" -eq 7 ] || fail "expected 7 problems: $out"
if grep -Ev '^[^:]+many\.conf:[0-9]+: [a-z_]+(\[[0-9]+\])?(\.[a-z_]+)*: .+' <<<"$out"; then
	fail "a line is not FILE:LINE: key: message"
fi
grep -q "OK" <<<"$out" && fail "OK printed for a broken file"
echo "ok: all problems of a broken file, in FILE:LINE: key: message form"

run "$BIN" -t -c "$TMP/nonexistent.conf"
[ $rc -eq 3 ] && grep -q "No such file" <<<"$out" || fail "missing file: $rc $out"
run "$BIN" -t -c "$SRC/tests/data/cfg/syntax.conf"
[ $rc -eq 3 ] && grep -q "syntax.conf:3: syntax error" <<<"$out" || fail "syntax: $out"
echo "ok: missing file and syntax error"

# --print-config: defaults filled in, secrets redacted, output loads again.
printf 'TOPSECRET\n' >"$TMP/db-password"
printf 'TOPSECRET-AMI\n' >"$TMP/ami"
cat >"$TMP/m.conf" <<CONF
database = { conninfo = "hostaddr=127.0.0.1"; password_file = "db-password"; };
pbx = ( { name = "o"; type = "ami"; host = "127.0.0.1"; username = "u"; secret_file = "ami"; } );
CONF
run "$BIN" --print-config -c "$TMP/m.conf"
[ $rc -eq 0 ] || fail "--print-config: $rc $out"
grep -q TOPSECRET <<<"$out" && fail "a secret was printed"
grep -q "port = 5038;" <<<"$out" || fail "defaults not filled in"
grep -q "contents redacted" <<<"$out" || fail "no redaction marker"
printf '%s\n' "$out" >"$TMP/printed.conf"
run "$BIN" -t -c "$TMP/printed.conf"
[ $rc -eq 0 ] || fail "printed config does not load: $out"
echo "ok: --print-config"
echo PASS
