#!/bin/bash
# pg_cluster.sh: a throwaway PostgreSQL cluster for tests, the demo and benchmarks.
#
# As a command:
#   eval "$(tests/lib/pg_cluster.sh start DIR [--fsync])"   # prints PG_* assignments
#   tests/lib/pg_cluster.sh env DIR      # prints them again for a running cluster
#   tests/lib/pg_cluster.sh down DIR     # stops the server, keeps the data (outage tests)
#   tests/lib/pg_cluster.sh up DIR       # starts it again on the same port
#   tests/lib/pg_cluster.sh psql DIR [psql args…]   # psql as the superuser
#   tests/lib/pg_cluster.sh stop DIR     # stops the server and removes DIR
#
# As a library (source it): pg_cluster_start DIR [--fsync] exports the PG_* variables;
# pg_cluster_down/up/stop/psql DIR as above.
#
# What it prints / exports:
#   PG_PORT          the TCP port on 127.0.0.1 (free when chosen)
#   PG_SOCKET_DIR    DIR/sock (the unix socket directory)
#   PG_DB, PG_USER   the daemon's database and login role (both "missedcalld")
#   PG_CONNINFO      libpq conninfo for the daemon: hostaddr=127.0.0.1 (no DNS)
#   PG_SUPER_CONNINFO the superuser ("postgres") over the unix socket
#   PG_LOG           the server log file
#
# DIR is created if missing and must be reachable by the postgres user (e.g. from
# `mktemp -d`): initdb refuses to run as root, so as root everything server-side
# runs as `postgres` (runuser) and DIR is chowned to it; as any other user it runs
# as that user. Auth is trust on loopback and the socket: tests only.
# fsync (and full_page_writes) are off unless --fsync; synchronous_commit stays on.

PG_CLUSTER_BIN=${PG_CLUSTER_BIN:-}

_pgc_die() { echo "pg_cluster: $*" >&2; return 1; }

_pgc_bindir() {
	if [ -n "$PG_CLUSTER_BIN" ]; then echo "$PG_CLUSTER_BIN"; return 0; fi
	local d
	for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
	done
	_pgc_die "no PostgreSQL server binaries (install postgresql-15)"
}

# Runs a command as the cluster's owner.
_pgc_as_owner() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

_pgc_free_port() {
	python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

_pgc_env() {
	local dir=$1 port
	port=$(cat "$dir/port" 2>/dev/null) || { _pgc_die "no cluster in $dir"; return 1; }
	cat <<EOF
PG_PORT=$port
PG_SOCKET_DIR='$dir/sock'
PG_DB=missedcalld
PG_USER=missedcalld
PG_CONNINFO='hostaddr=127.0.0.1 port=$port dbname=missedcalld user=missedcalld connect_timeout=5'
PG_SUPER_CONNINFO='host=$dir/sock port=$port dbname=missedcalld user=postgres'
PG_LOG='$dir/postgres.log'
export PG_PORT PG_SOCKET_DIR PG_DB PG_USER PG_CONNINFO PG_SUPER_CONNINFO PG_LOG
EOF
}

# Starts the server in $dir on the port recorded in $dir/port.
_pgc_server_start() {
	local dir=$1 bin port
	bin=$(_pgc_bindir) || return 1
	port=$(cat "$dir/port")
	_pgc_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
		-o "-p $port" start >/dev/null
}

pg_cluster_start() {
	local dir=$1 fsync=off bin tries port
	[ -n "$dir" ] || { _pgc_die "usage: start DIR [--fsync]"; return 1; }
	[ "${2:-}" = "--fsync" ] && fsync=on
	bin=$(_pgc_bindir) || return 1
	mkdir -p "$dir" || return 1
	dir=$(cd "$dir" && pwd)
	if [ "$(id -u)" = 0 ]; then
		chown postgres: "$dir" && chmod 0755 "$dir" || return 1
		runuser -u postgres -- test -w "$dir" ||
			{ _pgc_die "$dir is not reachable by the postgres user (use mktemp -d under /tmp)"; return 1; }
	fi
	if [ ! -d "$dir/data" ]; then
		_pgc_as_owner mkdir -p "$dir/sock" || return 1
		_pgc_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
			-E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; _pgc_die "initdb failed"; return 1; }
		_pgc_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF
# pg_cluster.sh (tests)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
fsync = $fsync
full_page_writes = $fsync
shared_buffers = 32MB
max_connections = 100
log_min_messages = warning
log_line_prefix = '%m [%p] %u@%d '
EOF
	fi
	# A port can be taken between choosing and binding: retry with another.
	for tries in 1 2 3 4 5; do
		if [ ! -s "$dir/port" ] || [ "$tries" -gt 1 ]; then
			port=$(_pgc_free_port) || return 1
			_pgc_as_owner tee "$dir/port" >/dev/null <<<"$port"
		fi
		if _pgc_server_start "$dir"; then
			break
		fi
		if [ "$tries" = 5 ]; then
			tail -20 "$dir/postgres.log" >&2
			_pgc_die "pg_ctl start failed"
			return 1
		fi
	done
	port=$(cat "$dir/port")
	# The daemon's role and database (idempotent: start may follow down/up).
	if ! "$bin/psql" -qAt -h "$dir/sock" -p "$port" -U postgres -d postgres \
		-c "SELECT 1 FROM pg_roles WHERE rolname = 'missedcalld'" | grep -q 1; then
		"$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres -d postgres \
			-c "CREATE ROLE missedcalld LOGIN" \
			-c "CREATE DATABASE missedcalld OWNER missedcalld" >&2 ||
			{ _pgc_die "creating role/database failed"; return 1; }
	fi
	eval "$(_pgc_env "$dir")"
}

pg_cluster_down() {
	local dir=$1 bin
	bin=$(_pgc_bindir) || return 1
	[ -d "$dir/data" ] || { _pgc_die "no cluster in $dir"; return 1; }
	_pgc_as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null
}

pg_cluster_up() {
	local dir=$1
	[ -d "$dir/data" ] || { _pgc_die "no cluster in $dir"; return 1; }
	_pgc_server_start "$dir"
}

pg_cluster_stop() {
	local dir=$1 bin
	[ -n "$dir" ] && [ -d "$dir" ] || return 0
	bin=$(_pgc_bindir) || return 1
	if [ -f "$dir/data/postmaster.pid" ]; then
		_pgc_as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 30 -m immediate stop >/dev/null 2>&1
	fi
	rm -rf "$dir"
}

pg_cluster_psql() {
	local dir=$1 bin
	shift
	bin=$(_pgc_bindir) || return 1
	"$bin/psql" -X -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$(cat "$dir/port")" -U postgres \
		-d missedcalld "$@"
}

# Command mode (not when sourced).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	cmd=$1
	shift || true
	case "$cmd" in
	start)
		pg_cluster_start "$@" >/dev/null || exit 1
		_pgc_env "$(cd "$1" && pwd)"
		;;
	env) _pgc_env "$(cd "$1" && pwd)" ;;
	down) pg_cluster_down "$@" ;;
	up) pg_cluster_up "$@" ;;
	stop) pg_cluster_stop "$@" ;;
	psql) pg_cluster_psql "$@" ;;
	*)
		echo "usage: $0 start DIR [--fsync] | env DIR | down DIR | up DIR | psql DIR [args] | stop DIR" >&2
		exit 2
		;;
	esac
fi
