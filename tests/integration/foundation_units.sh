#!/usr/bin/env bash
# The systemd units pass `systemd-analyze verify` and the service rates 2.0
# or better in `systemd-analyze security --offline=yes` (systemd 252 has
# both); the manuals render without warnings.
# Usage: foundation_units.sh BINARY BUILD_ROOT
set -euo pipefail
BIN=$(readlink -f "$1")
BUILD=$2
SRC=${MCD_SOURCE_ROOT:?}
TMP=$(mktemp -d /tmp/mcd-units-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The unit as installed, but naming the binary under test (verify checks
# that ExecStart= exists and is executable).
sed -e "s|@SBINDIR@/missedcalld|$BIN|g" \
    -e "s|@CONFIG@|$SRC/conf/missedcalld.conf|g" \
    "$SRC/systemd/missedcalld.service.in" >"$TMP/missedcalld.service"
cp "$SRC/systemd/missedcalld.socket" "$SRC/systemd/missedcalld-hep.socket" "$TMP/"
grep -Eq '@[A-Z]+@' "$TMP/missedcalld.service" && fail "unsubstituted @VAR@ in the unit"

out=$(cd "$TMP" && systemd-analyze verify --man=no ./missedcalld.service ./missedcalld.socket ./missedcalld-hep.socket 2>&1) ||
	fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
echo "ok: systemd-analyze verify"

out=$(cd "$TMP" && systemd-analyze security --offline=yes ./missedcalld.service 2>&1) ||
	fail "systemd-analyze security failed: $out"
level=$(sed -n 's/.*Overall exposure level for missedcalld.service: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$level" ] || fail "no exposure level in: $out"
awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "exposure $level > 2.0"
(cd "$TMP" && systemd-analyze security --offline=yes --threshold=20 ./missedcalld.service >/dev/null 2>&1) ||
	fail "--threshold=20 refused"
echo "ok: exposure level $level (<= 2.0)"

# The unit's contract bits.
for key in Type=notify WatchdogSec= Restart=on-failure StateDirectory=missedcalld \
	   LoadCredential=db-password DynamicUser=yes 'ExecReload=/bin/kill -HUP $MAINPID'; do
	grep -qF -- "$key" "$TMP/missedcalld.service" || fail "unit lacks $key"
done
grep -q '^ExecStartPre=.*--check-config' "$TMP/missedcalld.service" || fail "no ExecStartPre check"
grep -q '^ExecReload=.*--check-config' "$TMP/missedcalld.service" || fail "no ExecReload check"
grep -q '^FileDescriptorName=widget' "$TMP/missedcalld.socket" || fail "socket name"
grep -q '^FileDescriptorName=hep' "$TMP/missedcalld-hep.socket" || fail "hep socket name"
echo "ok: unit contract"

# Manuals: render cleanly; the generated one lists every section.
for page in "$SRC/man/missedcalld.8" "$BUILD/man/missedcalld.conf.5"; do
	[ -f "$page" ] || fail "missing $page"
	warn=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man $page failed"
	[ -z "$warn" ] || fail "man $page warns: $warn"
done
for s in daemon pbx database; do
	grep -q "^\.SS $s" "$BUILD/man/missedcalld.conf.5" || fail "section $s missing in missedcalld.conf.5"
done
# Every option --help lists is documented in missedcalld(8).
for opt in $("$BIN" --help | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
	roff=$(sed 's/-/\\-/g' <<<"$opt")
	grep -qF -- "$roff" "$SRC/man/missedcalld.8" || fail "missedcalld(8) does not document $opt"
done
echo "ok: manuals"

# meson install puts the binary, units, example config and manuals in place.
meson install -C "$BUILD" --no-rebuild --destdir "$TMP/inst" >"$TMP/install.log" 2>&1 ||
	fail "meson install: $(tail -5 "$TMP/install.log")"
for f in sbin/missedcalld lib/systemd/system/missedcalld.service \
	 lib/systemd/system/missedcalld.socket lib/systemd/system/missedcalld-hep.socket \
	 share/man/man8/missedcalld.8 share/man/man5/missedcalld.conf.5; do
	[ -n "$(find "$TMP/inst" -path "*/$f" -print -quit)" ] || fail "meson install lacks $f"
done
[ -n "$(find "$TMP/inst" -path '*/missedcalld/missedcalld.conf' -print -quit)" ] ||
	fail "meson install lacks the example configuration"
grep -q "^ExecStart=/.*/missedcalld -c /.*/missedcalld/missedcalld.conf$" \
	"$(find "$TMP/inst" -name missedcalld.service -print -quit)" || fail "installed unit paths"
echo "ok: meson install"
echo PASS
