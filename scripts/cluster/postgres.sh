#!/usr/bin/env bash
# A throwaway PostgreSQL server for shared Optuna studies (tests, CI, trying search.storage).
#
#   scripts/cluster/postgres.sh start   # install postgresql if missing (apt, root), initdb a fresh
#                                       # cluster, start it on 127.0.0.1:<free port>, create the
#                                       # database `tunebench`; prints the URL
#   scripts/cluster/postgres.sh url     # prints postgresql+psycopg2://postgres@127.0.0.1:PORT/tunebench
#   scripts/cluster/postgres.sh stop    # stops the server and deletes its data
#   scripts/cluster/postgres.sh status  # exit 0 if it answers
#
# Data, socket, log and port live in $TUNEBENCH_PG_DIR (default /tmp/tunebench-pg), owned by the
# postgres user (initdb and the server refuse to run as root). Trust authentication, listening
# on 127.0.0.1 only, fsync off: for tests, never for results you want to keep.
# TUNEBENCH_PG_PORT=N picks the port (default: a free one).
# Exit status: 0 ok; 1 start failed / not running; 3 PostgreSQL missing and not installable.
set -euo pipefail
# runuser, initdb's wrappers, slurmctld and munged live in sbin, which a non-root shell's PATH
# (or a clean `env -i` one) may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

STATE=${TUNEBENCH_PG_DIR:-/tmp/tunebench-pg}
DB=tunebench
PGUSER_OS=postgres

say() { echo "postgres.sh: $*" >&2; }

bindir() {  # the newest installed server's bin directory
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $d && -x $d/initdb ]]; then echo "$d"; return 0; fi
    if command -v pg_config >/dev/null && [[ -x $(pg_config --bindir)/initdb ]]; then pg_config --bindir; return 0; fi
    return 1
}

ensure_installed() {
    if bindir >/dev/null && id "$PGUSER_OS" >/dev/null 2>&1; then return 0; fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "PostgreSQL (initdb, user postgres) is not installed and cannot be installed here (needs root and apt-get)"
        exit 3
    fi
    say "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; }; }; then
        say "apt-get install postgresql failed"
        exit 3
    fi
}

as_pg() {  # run a command as the postgres user (or as ourselves when we are not root)
    if [[ $(id -u) -eq 0 ]]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

url() {
    [[ -s $STATE/port ]] || { say "not started ($STATE)"; return 1; }
    echo "postgresql+psycopg2://postgres@127.0.0.1:$(cat "$STATE/port")/$DB"
}

status() {
    local bin
    bin=$(bindir) || return 1
    [[ -s $STATE/port ]] || { say "not started ($STATE)"; return 1; }
    timeout 10 "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$STATE/port")" -d "$DB" -U postgres
}

start() {
    ensure_installed
    local bin port
    bin=$(bindir)
    if status 2>/dev/null; then say "already running"; url; return 0; fi
    stop >/dev/null 2>&1 || true
    port=${TUNEBENCH_PG_PORT:-$(free_port)}
    mkdir -p "$STATE"
    rm -rf "$STATE/data" "$STATE/sock"
    mkdir -p "$STATE/sock"
    [[ $(id -u) -eq 0 ]] && chown -R "$PGUSER_OS": "$STATE" && chmod 0755 "$STATE"
    as_pg "$bin/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 --no-sync >"$STATE/initdb.log" 2>&1 \
        || { say "initdb failed:"; tail -n 20 "$STATE/initdb.log" >&2; return 1; }
    as_pg "$bin/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $STATE/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null \
        || { say "the server did not start:"; tail -n 20 "$STATE/server.log" >&2; return 1; }
    echo "$port" >"$STATE/port"
    timeout 30 "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
    say "up on 127.0.0.1:$port (data in $STATE/data)"
    url
}

stop() {
    local bin
    bin=$(bindir) || return 0
    if [[ -f $STATE/data/postmaster.pid ]]; then
        as_pg "$bin/pg_ctl" -D "$STATE/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_pg "$bin/pg_ctl" -D "$STATE/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE/data" "$STATE/sock" "$STATE/port"
    say "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    url) url ;;
    status) status ;;
    *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
