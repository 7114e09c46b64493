#!/usr/bin/env bash
# Local kubetwin demo: control plane + mosquitto + operator + 20 simulated devices, and one
# reboot watched live.
#
#   hack/demo.sh up     start everything (idempotent) and show it working
#   hack/demo.sh down   stop everything
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.demo"
bin="$root/target/debug"
tools="${KUBETWIN_TOOLS_DIR:-$root/.cache/tools/bin}"
mkdir -p "$state"

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

start() { # NAME LOG COMMAND...
  local name=$1; shift
  if running "$name"; then say "$name already running (pid $(cat "$state/$name.pid"))"; return; fi
  setsid nohup "$@" >"$state/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/$name.pid"
  say "started $name (pid $!, log .demo/$name.log)"
}

stop() { # NAME
  if running "$1"; then
    kill -TERM "$(cat "$state/$1.pid")" 2>/dev/null || true
    for _ in $(seq 50); do running "$1" || break; sleep 0.2; done
    running "$1" && kill -KILL "$(cat "$state/$1.pid")" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "$state/$1.pid"
}

down() {
  stop sim
  stop operator
  stop env
}

up() {
  for b in kubetwin-env kubetwin-operator kubetwin-sim; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: run 'make demo' (it builds it)"
  done
  [ -x "$tools/kubectl" ] || die "kubectl is missing in $tools: run 'make tools'"
  export PATH="$tools:$PATH"

  start env "$bin/kubetwin-env" --dir "$state/env"
  say "waiting for the control plane and mosquitto"
  for _ in $(seq 300); do
    [ -f "$state/env/ready.json" ] && break
    running env || { tail -n 30 "$state/env.log" >&2; die "kubetwin-env exited; see .demo/env.log"; }
    sleep 0.5
  done
  [ -f "$state/env/ready.json" ] || die "the control plane did not become ready in 150s; see .demo/env.log"
  export KUBECONFIG="$state/env/kubeconfig"
  # The broker enforces per-device identity: the operator logs in as itself, and every
  # simulated device presents its own client certificate (common name = its device id).
  mapfile -t operator_flags < "$state/env/operator.flags"
  mapfile -t simulator_flags < "$state/env/simulator.flags"

  start operator env RUST_LOG=info "$bin/kubetwin-operator" "${operator_flags[@]}" \
    --http-addr 127.0.0.1:18080
  start sim "$bin/kubetwin-sim" "${simulator_flags[@]}" --count 20 --id-prefix default.sensor \
    --create-devices --namespace default --state-dir "$state/sim-state" --boot-seconds 3 \
    --response-delay-ms 1000
  for _ in $(seq 60); do kubectl get device sensor-2 >/dev/null 2>&1 && break; sleep 0.5; done
  # Client-side apply, as a person would type it next: the objects the simulator created get
  # their last-applied annotation now, so a later `kubectl apply -f examples/devices.yaml`
  # prints no warning.
  kubectl apply -f "$root/examples/devices.yaml" >/dev/null 2>&1
  say "waiting for 20 simulated devices to connect and sync"
  for _ in $(seq 120); do
    ready=$(kubectl get devices -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)
    [ "$ready" -ge 20 ] && break
    sleep 1
  done
  kubectl get devices

  say "rebooting sensor-1: kubectl get rebootrequests -w (Ctrl-C stops watching; the demo keeps running)"
  kubectl get rebootrequests -w &
  watcher=$!
  sleep 1
  name=$(kubectl create -f "$root/examples/reboot.yaml" -o jsonpath='{.metadata.name}')
  kubectl wait --for=condition=Complete "rebootrequest/$name" --timeout=180s >/dev/null || true
  sleep 1
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  phase=$(kubectl get rebootrequest "$name" -o jsonpath='{.status.phase}')
  [ "$phase" = Succeeded ] || die "the reboot ended $phase; see .demo/operator.log and .demo/sim.log"
  kubectl get device sensor-1

  cat <<MSG

The demo keeps running (control plane, mosquitto, operator, 20 simulated devices). Try it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$tools:\$PATH
  kubectl get kubetwin
  kubectl create -f examples/reboot.yaml && kubectl get rebootrequests -w   # a new reboot each time
  export PATH=$root/target/debug:\$PATH    # the kubectl twin plugin
  kubectl twin reboot sensor-3 --wait
  kubectl twin summary
  kubectl twin query "status.connection.state == 'Connected'" --group-by status.firmware.current
  kubectl patch device sensor-2 --type merge -p '{"spec":{"desired":{"led":"red"}}}'
  kubectl get device sensor-2 -o jsonpath='{.status.reported}'
  curl -s 127.0.0.1:18080/metrics
Logs: .demo/env.log, .demo/operator.log, .demo/sim.log. Stop everything with: make demo-down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: hack/demo.sh up|down" ;;
esac
