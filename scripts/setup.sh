#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Idempotent.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is required (install the Rust toolchain with rustup)" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
