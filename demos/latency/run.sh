#!/usr/bin/env bash
# A latency report for this machine: the built-in encoder under each profile in firmware-config/
# (its window, arithmetic and thread count), per hop, against the profile's latency budget.
#   demos/latency/run.sh [REPEAT]     timed repetitions per measurement (default 50)
# `ajepa bench --profile P` takes the window and threads from the profile and gives the verdict;
# this script lays the profiles side by side. Needs python3 for the table (the raw `ajepa bench`
# output is printed without it).
set -euo pipefail
. "$(dirname "$0")/../common.sh"
repeat="${1:-50}"
echo "machine: $(uname -sm), $(nproc) cores"
printf '%-18s %7s %-12s %7s %9s %9s %10s %9s  %s\n' profile window runtime threads "p50 ms" "p99 ms" "budget ms" "RTF" verdict
for profile in "$repo"/firmware-config/*.toml; do
    name="$(basename "$profile" .toml)"
    json="$("$AJEPA" bench --profile "$profile" --repeat "$repeat" --json)"
    if ! command -v python3 >/dev/null 2>&1; then
        echo "$name: $json"
        continue
    fi
    NAME="$name" python3 -c '
import json, os, sys
d = json.load(sys.stdin)
e, v = d["encoder"], d["verdict"]
r = next(r for r in e["runtimes"] if r["runtime"] == v["runtime"])
window = e["patches"] // 8 * 0.16
verdict = "within budget" if v["within_budget"] else "OVER BUDGET"
name, runtime, threads, p50 = os.environ["NAME"], v["runtime"], e["threads"], r["per_hop_ms"]["p50"]
p99, budget, rtf = v["hop_p99_ms"], v["budget_ms"], v["real_time_factor"]
print(f"{name:<18} {window:6.2f}s {runtime:<12} {threads:>7} {p50:9.2f} {p99:9.2f} {budget:10.0f} {rtf:9.4f}  {verdict}")
' <<<"$json"
done
echo "p50: the encoder per hop; p99: one hop end to end (front end + encoder + head), as the verdict counts it;"
echo "RTF: (front end + encoder + head) at p50 over a hop of audio"
