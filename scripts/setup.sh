#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Idempotent.
#
# Fails, saying what is missing, when a tool CI needs cannot be had: a silent failure here would
# only surface later as a confusing "no such command" from cargo fmt or cargo clippy.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is required (install the Rust toolchain with rustup)" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        continue
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        echo "setup: $component is missing and rustup is not installed to add it" >&2
        exit 1
    fi
    if ! rustup component add "$component"; then
        echo "setup: 'rustup component add $component' failed; install $component by hand" >&2
        exit 1
    fi
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "setup: $component was added but 'cargo ${component/rustfmt/fmt}' still fails" >&2
        exit 1
    fi
done
