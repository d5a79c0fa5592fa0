#!/usr/bin/env bash
# A two-node Ray cluster on this machine, for the tests of the Ray executor (core/jobs/ray_jobs.py).
#
#   eval "$(bash .ci/ray.sh start)"   starts a head and a second node, one CPU each, on free
#                                     ports; prints the exports that reach it: its address in
#                                     LORA_LAB_TEST_RAY, and Ray's token authentication
#   bash .ci/ray.sh stop              stops those two nodes, and only those
#   bash .ci/ray.sh restart-worker    kills the second node outright, and starts it again
#
# Each node runs `ray start --block` in the background: a node so started shuts its own Ray
# processes down when it gets SIGTERM, which is how `stop` ends them (`ray stop` would end every
# Ray process on the machine, a neighbour's too). Their pids, logs, Ray's temporary files and
# the LORA_LAB_HOME their workers see (datasets, weights) live in .ci/.ray/ (git ignores it).
# The head is reached at 127.0.0.1, but Ray has no setting to bind its GCS and raylets to one
# interface, so they listen on all of them: the cluster requires a token of its own
# (RAY_AUTH_MODE=token, a random one in .ci/.ray/token), without which nobody else can run code
# on it, and which a process that joins it needs too (hence the exports).
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-.venv/bin/ray}
PYTHON=${PYTHON:-.venv/bin/python}
STATE=.ci/.ray
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$PWD/$STATE/token"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ray start --block for one node, in its own session, its pid kept in $STATE/<name>.pid
start_node() {
  local name=$1; shift
  mkdir -p "$STATE/$name"
  LORA_LAB_HOME="$PWD/$STATE/home" setsid "$RAY" start --block --num-cpus=1 --disable-usage-stats \
    --temp-dir="$PWD/$STATE/$name" --dashboard-agent-listen-port="$(free_port)" \
    --metrics-export-port="$(free_port)" --runtime-env-agent-port="$(free_port)" \
    "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

# whether something accepts connections on 127.0.0.1, port $1
answers() {
  "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
    "$1" 2>/dev/null
}

# whether the cluster at $1 has both nodes alive
has_two_nodes() {
  local alive
  alive=$("$PYTHON" - "$1" <<'PY' 2>/dev/null
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for node in ray.nodes() if node["Alive"]))
PY
  ) || return 1
  [ "$alive" = 2 ]
}

# wait until the command "${@:3}" succeeds, at most $2 seconds, while node $1 still runs
wait_for() {
  local name=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "ray.sh: the Ray $name node did not come up (its log: $STATE/$name.log)" >&2
      stop; exit 1
    fi
    sleep 1
  done
}

start() {
  if [ -e "$STATE/head.pid" ]; then echo "ray.sh: a cluster is already started here ($STATE)" >&2; exit 1; fi
  mkdir -p "$STATE"
  (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/token")
  local port; port=$(free_port)
  local address=127.0.0.1:$port
  start_node head --head --port="$port" --node-ip-address=127.0.0.1 --include-dashboard=false \
    --ray-client-server-port="$(free_port)"
  wait_for head 120 answers "$port"
  start_node worker --address="$address"
  wait_for worker 180 has_two_nodes "$address"
  echo "$address" >"$STATE/address"
  printf 'export LORA_LAB_TEST_RAY=%q RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=%q\n' \
    "$address" "$RAY_AUTH_TOKEN_PATH"
}

stop() {
  for name in worker head; do
    [ -e "$STATE/$name.pid" ] || continue
    local pid; pid=$(cat "$STATE/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do  # it drains, then ends its processes (a zombie has ended too)
      case "$(ps -o stat= -p "$pid" 2>/dev/null)" in ""|Z*) break ;; esac
      sleep 0.5
    done
    rm -f "$STATE/$name.pid"
  done
  rm -f "$STATE/address" "$STATE/token"
}

# The worker node killed as a machine is lost (SIGKILL to its every process), and a new one
# started in its place: bench/faults.py's fault. Done when Ray counts two live nodes again.
restart_worker() {
  local pid; pid=$(cat "$STATE/worker.pid")
  kill -KILL -- "-$pid" 2>/dev/null || true
  start_node worker --address="$(cat "$STATE/address")"
  wait_for worker 180 has_two_nodes "$(cat "$STATE/address")"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart-worker) restart_worker ;;
  *) echo "usage: bash .ci/ray.sh start|stop|restart-worker" >&2; exit 2 ;;
esac
