#!/usr/bin/env bash
# Makes sure the Rust toolchain (cargo, rustfmt, clippy) is there, installing the components
# with rustup when it can; otherwise says what to install.
set -euo pipefail
die() { printf '[rust] error: %s\n' "$*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.89 with rustup (https://rustup.rs)"
for component in rustfmt clippy; do
  sub=${component/rustfmt/fmt}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo $sub not found: install the $component component"
    echo "[rust] installing $component with rustup" >&2
    rustup component add "$component" || die "rustup component add $component failed"
  fi
done
