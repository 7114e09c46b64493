#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl), helm
# and krew from the pinned Go wrapper modules in e2e/tools/, and makes sure mosquitto,
# libfaketime, promtool and tmux (Debian packages) are installed.
#
# Idempotent: a binary is rebuilt only when its module pin (go.mod/go.sum) changes. Binaries
# land in $KUBETWIN_TOOLS_DIR (default: .cache/tools/bin, ignored by git).
#
#   hack/tools.sh            build whatever is missing or stale
#   hack/tools.sh --check    only report what is missing (exit 1 if anything is)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${KUBETWIN_TOOLS_DIR:-$root/.cache/tools/bin}
stamp_dir="$bin_dir/.stamps"
mkdir -p "$bin_dir" "$stamp_dir"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go toolchain not found: install Go >= 1.26 (https://go.dev/doc/install) and put 'go' on PATH"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[ "${go_minor:-0}" -ge 26 ] || die "Go $(go env GOVERSION) is too old: the pinned Kubernetes needs go >= 1.26"

# stamp_of DIR LDFLAGS -> a hash of the wrapper module and the link flags, so a pin or flag
# change triggers a rebuild.
stamp_of() { { cat "$1/go.mod" "$1/go.sum"; echo "$2"; } | sha256sum | cut -c1-16; }

# fresh NAME DIR LDFLAGS -> true when bin/NAME was built from the current pin and flags.
fresh() { [ -x "$bin_dir/$1" ] && [ "$(cat "$stamp_dir/$1" 2>/dev/null)" = "$(stamp_of "$2" "$3")" ]; }

# build NAME DIR PKG [LDFLAGS]
build() {
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if fresh "$name" "$dir" "$ldflags"; then return 0; fi
  if [ "${CHECK_ONLY:-0}" = 1 ]; then missing+=("$name"); return 0; fi
  say "building $name from $pkg (cold builds take several minutes on 2 cores)"
  local start=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin_dir/$name.tmp" "$pkg") \
    || die "go build of $name failed (module $dir); see the output above"
  mv "$bin_dir/$name.tmp" "$bin_dir/$name"
  stamp_of "$dir" "$ldflags" > "$stamp_dir/$name"
  say "built $name in $((SECONDS - start))s"
}

missing=()
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

kube_dir="$root/e2e/tools/kube"
kube_version=$(cat "$kube_dir/VERSION")
kube_major=$(echo "$kube_version" | sed -n 's/^v\([0-9]*\)\..*/\1/p')
kube_minor=$(echo "$kube_version" | sed -n 's/^v[0-9]*\.\([0-9]*\)\..*/\1/p')
kube_ld=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ld+=" -X $p.gitVersion=$kube_version -X $p.gitMajor=$kube_major -X $p.gitMinor=$kube_minor"
  kube_ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

etcd_dir="$root/e2e/tools/etcd"
etcd_version=$(cat "$etcd_dir/VERSION")
helm_dir="$root/e2e/tools/helm"
helm_version=$(cat "$helm_dir/VERSION")
helm_ld="-X helm.sh/helm/v3/internal/version.version=$helm_version"
krew_dir="$root/e2e/tools/krew"
krew_version=$(cat "$krew_dir/VERSION")
# helm's built-in default Kubernetes version (used by `helm template` and `helm lint` without a
# cluster) is set by its Makefile; match it to the pinned control plane.
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ld+=" -X $p.k8sVersionMajor=$kube_major -X $p.k8sVersionMinor=$kube_minor"
done

build etcd "$etcd_dir" go.etcd.io/etcd/server/v3
build kube-apiserver "$kube_dir" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ld"
build kube-controller-manager "$kube_dir" k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ld"
build kubectl "$kube_dir" k8s.io/kubernetes/cmd/kubectl "$kube_ld"
build helm "$helm_dir" helm.sh/helm/v3/cmd/helm "$helm_ld"
build krew "$krew_dir" sigs.k8s.io/krew/cmd/krew "-X sigs.k8s.io/krew/internal/version.gitTag=$krew_version"

# Debian packages the tests need. `debian_package NAME PACKAGE` is called when NAME is missing:
# it notes it (CHECK_ONLY=1), installs PACKAGE (root with apt-get; returns 0 so the caller can
# tidy up after the install), or stops with the command to run.
debian_package() {
  local name=$1 package=$2
  if [ "${CHECK_ONLY:-0}" = 1 ]; then
    missing+=("$name")
    return 1
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $name (package $package) with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null) \
      || die "apt-get install $package failed"
    return 0
  fi
  die "$name is not installed: run 'sudo apt-get install $package' (Debian/Ubuntu)"
}

# mosquitto: the tests' brokers. The package enables a system-wide broker on port 1883; the
# tests start their own.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  if debian_package mosquitto mosquitto; then
    (command -v systemctl >/dev/null && systemctl disable --now mosquitto >/dev/null 2>&1) || true
  fi
fi

# libfaketime (Debian's faketime package) steps the operator's clock in the fault tests.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] \
  && ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  debian_package libfaketime faketime || true
fi

# promtool (Debian's prometheus package) checks the chart's alerting rules in the e2e tests.
# The package may enable and start a Prometheus server on port 9090; only promtool is used.
if ! command -v promtool >/dev/null; then
  if debian_package promtool prometheus; then
    (command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1) || true
    (command -v service >/dev/null && service prometheus stop >/dev/null 2>&1) || true
  fi
fi

# tmux gives the plugin's live job view a real terminal in the e2e tests.
if ! command -v tmux >/dev/null; then
  debian_package tmux tmux || true
fi

if [ "${CHECK_ONLY:-0}" = 1 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    say "missing or stale: ${missing[*]} (run 'hack/tools.sh' or 'make tools' to build them)"
    exit 1
  fi
  say "all tools present in $bin_dir"
  exit 0
fi
say "tools ready in $bin_dir: kubernetes $kube_version, etcd $etcd_version, helm $helm_version, krew $krew_version"
