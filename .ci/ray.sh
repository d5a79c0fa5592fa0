#!/usr/bin/env bash
# A two-node Ray cluster on this machine, for the tests of the Ray executor (core/ray_jobs.py).
#
#   bash .ci/ray.sh start    starts a head and a second node, one CPU each, on free ports;
#                            prints the head's address (for LORA_LAB_TEST_RAY / LORA_LAB_RAY)
#   bash .ci/ray.sh stop     stops those two nodes, and only those
#
# Each node runs `ray start --block` in the background: a node so started shuts its own Ray
# processes down when it gets SIGTERM, which is how `stop` ends them (`ray stop` would end every
# Ray process on the machine, a neighbour's too). Their pids, logs, Ray's temporary files and
# the LORA_LAB_HOME their workers see (datasets, weights) live in .ci/.ray/ (git ignores it).
# The head is reached at 127.0.0.1; Ray itself has no setting to bind its GCS and raylets to one
# interface, so they listen on all of them: a CI machine must not expose its ports.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-.venv/bin/ray}
PYTHON=${PYTHON:-.venv/bin/python}
STATE=.ci/.ray

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

# the nodes the cluster at $1 has alive (0 while its head does not answer)
nodes() {
  "$PYTHON" - "$1" <<'PY' 2>/dev/null || echo 0
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for node in ray.nodes() if node["Alive"]))
PY
}

start() {
  if [ -e "$STATE/head.pid" ]; then echo "ray.sh: a cluster is already started here ($STATE)" >&2; exit 1; fi
  mkdir -p "$STATE"
  local port; port=$(free_port)
  local address=127.0.0.1:$port
  start_node head --head --port="$port" --node-ip-address=127.0.0.1 --include-dashboard=false \
    --ray-client-server-port="$(free_port)"
  for _ in $(seq 120); do  # the head takes a few seconds
    "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.5
  done
  start_node worker --address="$address"
  for _ in $(seq 60); do
    [ "$(nodes "$address")" = 2 ] && { echo "$address" >"$STATE/address"; echo "$address"; return; }
    sleep 1
  done
  echo "ray.sh: the two Ray nodes did not come up (logs in $STATE)" >&2
  stop; exit 1
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
  rm -f "$STATE/address"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: bash .ci/ray.sh start|stop" >&2; exit 2 ;;
esac
