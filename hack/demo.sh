#!/usr/bin/env bash
# Local kubetwin demo: control plane + mosquitto + operator (+ simulated devices).
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
  for b in kubetwin-env kubetwin-operator; do
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
  broker=$(sed -n 's/.*"broker":"\([^"]*\)".*/\1/p' "$state/env/ready.json")

  start operator env RUST_LOG=info,kubetwin_operator=debug "$bin/kubetwin-operator" \
    --broker-url "$broker" --mqtt-client-id kubetwin-operator-demo
  kubectl apply -f "$root/examples/devices.yaml"
  kubectl wait --for=jsonpath='{.status.deviceId}' device --all --timeout=60s >/dev/null \
    || die "the operator did not write Device status; see .demo/operator.log"
  kubectl get devices

  cat <<MSG

The demo keeps running. Try it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$tools:\$PATH
  kubectl get kubetwin
  kubectl explain device.spec
Logs: .demo/env.log, .demo/operator.log. Stop everything with: make demo-down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: hack/demo.sh up|down" ;;
esac
