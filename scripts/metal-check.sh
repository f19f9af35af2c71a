#!/usr/bin/env bash
# Type-checks the Metal build of the training crate (`ajepa-train --features metal`, Apple
# silicon) from Linux: no Mac, no Apple SDK. Every dependency of that build compiles without
# the SDK's headers: microphone capture (cpal's CoreAudio bindings) is the root crate's
# `capture` feature, which the training crate leaves off; `.npy` files are read and written by
# src/arrays.rs; shards are compressed in pure Rust (brotli, ruzstd).
#
#   scripts/metal-check.sh            rustup target aarch64-apple-darwin, then cargo check
#
# Builds go to target/apple (ignored by git). A type check links nothing, so Metal's frameworks
# are not needed; running the Metal build needs a Mac (`cargo build --release -p
# audio-jepa-training --features metal`, then `ajepa-train pretrain --compute metal`).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-apple-darwin
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
fi
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/apple}" \
    cargo check -p audio-jepa-training --features metal --target "$TARGET"
