#!/usr/bin/env bash
# Builds the operator image with buildah (no daemon, vfs storage): a release build of
# kubetwin-operator plus the shared libraries ldd reports for it, in a FROM scratch image.
#
#   hack/image.sh [TAG]         default tag: kubetwin/operator:dev
#   hack/image.sh --check TAG   runs `kubetwin-operator --version` inside the built image
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }
say() { printf '[image] %s\n' "$*" >&2; }

ensure_buildah() {
  command -v buildah >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing buildah with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null) \
      || die "apt-get install buildah failed"
  else
    die "buildah is not installed: run 'sudo apt-get install buildah'"
  fi
}
buildah_() { buildah --storage-driver vfs "$@"; }

if [ "${1:-}" = "--check" ]; then
  tag=${2:-kubetwin/operator:dev}
  ensure_buildah
  container=$(buildah_ from "$tag")
  trap 'buildah_ rm "$container" >/dev/null 2>&1 || true' EXIT
  buildah_ run --isolation chroot "$container" -- /kubetwin-operator --version
  exit 0
fi

tag=${1:-kubetwin/operator:dev}
ensure_buildah
command -v ldd >/dev/null || die "ldd not found (package libc-bin)"
cd "$root"
profile=${KUBETWIN_IMAGE_PROFILE:-release}   # the test suite uses "dev" to reuse its build
say "building kubetwin-operator (profile $profile)"
cargo build --locked --profile "$profile" -p kubetwin-operator --bin kubetwin-operator
dir=$profile; [ "$profile" = dev ] && dir=debug
binary="${CARGO_TARGET_DIR:-$root/target}/$dir/kubetwin-operator"

stage="$root/.cache/image"
rm -rf "$stage/rootfs"
mkdir -p "$stage/rootfs/etc" "$stage/rootfs/tmp"
install -m 0755 "$binary" "$stage/rootfs/kubetwin-operator"
# The dynamic loader and every library the binary needs, at the paths ldd reports.
for lib in $(ldd "$binary" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$stage/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/rootfs$lib"
done
echo "nonroot:x:65532:65532:nonroot:/:/sbin/nologin" > "$stage/rootfs/etc/passwd"
echo "nonroot:x:65532:" > "$stage/rootfs/etc/group"
cp "$root/Containerfile" "$stage/Containerfile"
say "building image $tag"
buildah_ bud --quiet -f "$stage/Containerfile" -t "$tag" "$stage"
say "built $tag"
