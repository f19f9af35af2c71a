# Sourced by the demos: finds `ajepa` and the ESC-50 clips.
# AJEPA: the binary to run (default: `ajepa` on PATH, else this checkout's release build).
# ESC50: the ESC-50 folder (esc50.csv, audio/), default ../shared/data/esc50 beside the checkout.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
if [ -z "${AJEPA:-}" ]; then
    if command -v ajepa >/dev/null 2>&1; then
        AJEPA=ajepa
    else
        (cd "$repo" && cargo build --release --quiet --bin ajepa)
        AJEPA="$repo/target/release/ajepa"
    fi
fi
ESC50="${ESC50:-$repo/../shared/data/esc50}"
ESC50="$(cd "$ESC50" 2>/dev/null && pwd || echo "$ESC50")"

need_esc50() {
    if [ ! -f "$ESC50/esc50.csv" ]; then
        echo "ESC-50 not found at $ESC50: download it from https://github.com/karolpiczak/ESC-50" >&2
        echo "and set ESC50=/path/to/ESC-50-master (the folder with esc50.csv and audio/)" >&2
        exit 2
    fi
}

# The files of ESC-50 class $1 in fold $2, sorted, one per line (column 1 filename, 2 fold, 4 category).
esc50_clips() {
    awk -F, -v c="$1" -v f="$2" 'NR > 1 && $4 == c && $2 == f { print $1 }' "$ESC50/esc50.csv" | sort
}
