#!/usr/bin/env bash
# AArch64 (Raspberry Pi 5, Jetson Orin, Apple M-series CPUs) checked from an x86-64 Debian/Ubuntu
# machine, with no ARM hardware:
#
#   scripts/aarch64.sh --setup          rustup target + cross gcc (build scripts compile C for the target)
#   scripts/aarch64.sh --setup-qemu     + qemu-user and the arm64 libraries tests link against
#   scripts/aarch64.sh --check          cargo clippy -D warnings for aarch64-unknown-linux-gnu
#   scripts/aarch64.sh --test [FILTER...]  the library's unit tests built for aarch64 and run
#                                       under qemu-aarch64 (default FILTERs: engine model::fused,
#                                       i.e. every NEON and sdot kernel against the scalar
#                                       reference, and the fused training ops against candle's)
#   scripts/aarch64.sh --test-all       the whole suite under qemu (about 10 minutes on 2 cores,
#                                       most of it the training tests)
#
# Builds go to target/aarch64 (ignored by git). qemu's `max` CPU has the dot-product extension,
# so `--test` runs the portable, NEON and NEON+dotprod kernels; QEMU_CPU=cortex-a72 runs a CPU
# without it. Timings under qemu mean nothing; only correctness is checked here.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# alsa-sys asks pkg-config for ALSA's flags; the host's answer is right for the target's
# multiarch copy too (and a type check links nothing).
export PKG_CONFIG_ALLOW_CROSS=1
# No `-L /usr/aarch64-linux-gnu`: with qemu 7.2 that sysroot's loader next to the multiarch
# libraries hangs on the first thread spawn; the multiarch loader in /lib works.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
# Tests that start the `ajepa` binary start it through qemu too (tests/common/mod.rs).
export AJEPA_TEST_RUNNER=qemu-aarch64

apt_install() {
    local sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd "$@"
}

setup() {
    rustup target list --installed | grep -q "^$TARGET\$" || rustup target add "$TARGET"
    if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
        apt_install apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt_install apt-get install -y -qq gcc-aarch64-linux-gnu
    fi
}

setup_qemu() {
    setup
    if ! command -v qemu-aarch64 >/dev/null 2>&1 || ! dpkg -s libasound2-dev:arm64 >/dev/null 2>&1; then
        apt_install dpkg --add-architecture arm64
        apt_install apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt_install apt-get install -y -qq qemu-user libasound2-dev:arm64
    fi
}

case "${1:-}" in
    --setup) setup ;;
    --setup-qemu) setup_qemu ;;
    --check)
        cargo clippy --workspace --all-targets --target "$TARGET" -- -D warnings
        ;;
    --test)
        shift
        [ "$#" -gt 0 ] || set -- engine model::fused
        cargo test -p audio-jepa --lib --target "$TARGET" -- "$@"
        ;;
    --test-all)
        cargo test --workspace --target "$TARGET"
        ;;
    *)
        sed -n '2,16p' "$0"
        exit 2
        ;;
esac
