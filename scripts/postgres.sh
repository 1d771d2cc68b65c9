#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for grayscope's PostgreSQL tests and benchmarks.
#
#   scripts/postgres.sh start DIR   initdb in DIR (owned by the postgres user when run as root), start
#                                   it on a free port, print its URL (postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres)
#   scripts/postgres.sh pause DIR   stop it, keeping its data (an outage, for tests)
#   scripts/postgres.sh resume DIR  start it again on the same port
#   scripts/postgres.sh stop DIR    stop it and remove DIR
#
# Uses Debian's postgresql (15); .ci/run installs it when missing.
set -euo pipefail

bin=""
for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && bin=$d
done
if [ -z "$bin" ]; then
    echo "postgres.sh: no PostgreSQL server (Debian package postgresql)" >&2
    exit 1
fi

# Runs a server binary as the postgres user when we are root (initdb refuses root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
start)
    dir=${2:?usage: postgres.sh start DIR}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        # The postgres user must reach it: a private temporary parent is opened for passing through.
        chmod a+x "$(dirname "$dir")"
    fi
    # Password authentication over TCP, as a real server asks (a wrong password is refused);
    # the socket in DIR stays trusted for the owner.
    password=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    echo "$password" >"$dir/password"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/password"; fi
    as_owner "$bin/initdb" -D "$dir/data" --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$dir/password" -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    echo "postgres://postgres:$password@127.0.0.1:$port/postgres"
    ;;
pause)
    # Stops the server, keeping its data: a database outage, for tests.
    dir=${2:?usage: postgres.sh pause DIR}
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
resume)
    dir=${2:?usage: postgres.sh resume DIR}
    port=$(cat "$dir/port")
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    dir=${2:?usage: postgres.sh stop DIR}
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres.sh start|pause|resume|stop DIR" >&2
    exit 2
    ;;
esac
