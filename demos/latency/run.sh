#!/usr/bin/env bash
# A latency report for this machine: the built-in encoder under each profile in firmware-config/
# (its window, arithmetic and thread count), per hop, against the profile's latency budget.
#   demos/latency/run.sh [REPEAT]     timed repetitions per measurement (default 50)
# Needs python3 for the table (the raw `ajepa bench` output is printed without it).
set -euo pipefail
. "$(dirname "$0")/../common.sh"
repeat="${1:-50}"
setting() { # setting FILE KEY DEFAULT: a `key = value` of the profile's [stream] table
    local v
    v="$(sed -n "s/^$2 *= *\"\{0,1\}\([^\" #]*\)\"\{0,1\}.*/\1/p" "$1" | head -n 1)"
    echo "${v:-$3}"
}
echo "machine: $(uname -sm), $(nproc) cores"
printf '%-18s %7s %6s %7s %9s %9s %10s %9s  %s\n' profile window arith threads "p50 ms" "p99 ms" "budget ms" "RTF" verdict
for profile in "$repo"/firmware-config/*.toml; do
    name="$(basename "$profile" .toml)"
    window="$(setting "$profile" window_columns 6)"
    hop="$(setting "$profile" hop_columns 1)"
    threads="$(setting "$profile" threads 1)"
    quant="$(setting "$profile" quantization f32)"
    budget="$(setting "$profile" latency_budget_ms 100)"
    json="$("$AJEPA" bench --profile "$profile" --model default --window-columns "$window" \
        --threads "$threads" --repeat "$repeat" --json)"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "$name: $json"
        continue
    fi
    NAME="$name" WINDOW="$window" HOP="$hop" QUANT="$quant" THREADS="$threads" BUDGET="$budget" python3 -c '
import json, os, sys
d = json.load(sys.stdin)
e = os.environ
want = "engine q8" if e["QUANT"] != "f32" else "engine f32"
r = next(r for r in d["encoder"]["runtimes"] if r["runtime"].startswith(want))
p50, p99 = r["per_hop_ms"]["p50"], r["per_hop_ms"]["p99"]
hop_s = int(e["HOP"]) * 0.16
fe = d["streaming_ms_per_audio_s"]["median"] * hop_s
budget = float(e["BUDGET"])
verdict = "within budget" if p99 + fe <= budget else "OVER BUDGET"
name, window, quant, threads = e["NAME"], int(e["WINDOW"]) * 0.16, e["QUANT"], e["THREADS"]
rtf = (p50 + fe) / 1e3 / hop_s
print(f"{name:<18} {window:6.2f}s {quant:>6} {threads:>7} {p50:9.2f} {p99:9.2f} {budget:10.0f} {rtf:9.4f}  {verdict}")
' <<<"$json"
done
echo "p50/p99: one hop of the encoder (front end per hop is well under 0.1 ms); RTF: (front end + encoder) / hop of audio"
