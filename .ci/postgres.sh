#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on this machine: Debian's `postgresql` package,
# a data folder inside DIR, a free port on 127.0.0.1, password logins over TCP.
#
#   .ci/postgres.sh start DIR     start it (the first time: initdb in DIR, a free port, a role
#                                 that may create databases and roles, and its database); prints
#                                 the URL, whose user and password the tests use
#   .ci/postgres.sh stop DIR      stop it (DIR stays: the caller made it, the caller removes it)
#   .ci/postgres.sh restart DIR   stop, then start on the same port
#
# The server refuses to run as root: as root, everything here runs as the `postgres` user.
set -euo pipefail

command=${1:-}
dir=${2:-}
if [[ -z "$command" || -z "$dir" ]]; then
  echo "usage: $0 start|stop|restart DIR" >&2
  exit 2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$bin" ]]; then
  echo "$0: PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
  exit 2
fi
as_server=()
[[ "$(id -u)" -eq 0 ]] && as_server=(runuser -u postgres --)

ROLE=lora
PASSWORD=lora-lab-ci
DATABASE=lora_lab

server() { "${as_server[@]}" "$bin/$1" "${@:2}"; }

# fsync=off: a throwaway server (a stop, even the restart test's, still writes everything out).
start_server() {
  local port
  port=$(cat "$dir/port")
  server pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
}

case "$command" in
  start)
    if [[ ! -e "$dir/data" ]]; then
      [[ "$(id -u)" -eq 0 ]] && chown postgres: "$dir"
      python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        >"$dir/port"
      printf '%s\n' "$PASSWORD" >"$dir/password"
      [[ "$(id -u)" -eq 0 ]] && chown postgres: "$dir/port" "$dir/password"
      server initdb -D "$dir/data" -U postgres --pwfile="$dir/password" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
      start_server
      server psql -q -h "$dir" -p "$(cat "$dir/port")" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE $ROLE LOGIN CREATEDB CREATEROLE PASSWORD '$PASSWORD'" \
        -c "CREATE DATABASE $DATABASE OWNER $ROLE" >/dev/null
    else
      start_server
    fi
    echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$(cat "$dir/port")/$DATABASE"
    ;;
  stop)
    if [[ -e "$dir/data/postmaster.pid" ]]; then
      server pg_ctl -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
  restart)
    "$0" stop "$dir"
    "$0" start "$dir" >/dev/null
    ;;
  *)
    echo "usage: $0 start|stop|restart DIR" >&2
    exit 2
    ;;
esac
