#!/usr/bin/env bash
# A/B: two gateway builds, alternated, on the same rpc or fan-out run.
#
#   A=/path/to/old/rainbow B=target/release/rainbow bench/ab.sh rpc      # C=8 SECS=8 WARMUP=2
#   A=... B=... N=19000 bench/ab.sh fanout                               # FIXED=100000 FIXED_SECS=20
#
# This machine's speed drifts by 10-20 % within minutes (a virtual machine
# on shared hardware), more than many changes are worth, so two builds
# measured one after the other prove little. This script runs A, B, A, B...
# (PAIRS pairs, 3 by default), each run on a freshly started gateway, and
# compares pair by pair: a change is real when B wins in every pair. One
# line per run and a summary go to stderr; the JSON lines of the runs, each
# tagged with its side and pair, to stdout.
#
# rpc: round trips/s, gateway CPU per round trip, p50 over direct (see
# bench/rpc.sh). fanout: the fixed-rate run only (MODES=fixed of
# bench/fanout.sh): p99 and gateway CPU per delivery.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${1:-}
A=${A:?A: path of the first rainbow binary}
B=${B:?B: path of the second rainbow binary}
PAIRS=${PAIRS:-3}
case $KIND in
  rpc | fanout) ;;
  *)
    echo "usage: A=BIN B=BIN bench/ab.sh rpc|fanout" >&2
    exit 2
    ;;
esac
for bin in "$A" "$B"; do
  [[ -x $bin ]] || { echo "$bin is not an executable" >&2; exit 2; }
done

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for pair in $(seq "$PAIRS"); do
  for side in A B; do
    bin=$A
    [[ $side == B ]] && bin=$B
    if [[ $KIND == rpc ]]; then
      out=$(RAINBOW_BIN=$bin C=${C:-8} SECS=${SECS:-8} bench/rpc.sh 2>/dev/null)
    else
      out=$(RAINBOW_BIN=$bin TARGETS=rainbow MODES=fixed bench/fanout.sh 2>/dev/null)
    fi
    python3 -c '
import json, sys
for line in sys.argv[3].splitlines():
    r = json.loads(line)
    r["ab_side"], r["ab_pair"] = sys.argv[1], int(sys.argv[2])
    print(json.dumps(r, separators=(",", ":")))' "$side" "$pair" "$out" | tee -a "$lines"
  done
done

python3 - "$KIND" "$lines" "${WARMUP:-2}" >&2 <<'EOF'
import json, statistics, sys

kind, path, warmup = sys.argv[1], sys.argv[2], float(sys.argv[3])
runs = [json.loads(l) for l in open(path)]


def figures(r):
    """(higher-is-better figure, its name, other figures as text)"""
    if kind == "rpc":
        g = r["gateway"]
        # The gateway's CPU is counted over warm-up and measurement.
        n = g["round_trips_per_sec"] * (g["window_secs"] + warmup)
        cpu = g["gateway_cpu_seconds"] * 1e6 / n if n and g["gateway_cpu_seconds"] is not None else float("nan")
        return g["round_trips_per_sec"], "round trips/s", f"gateway CPU {cpu:.1f} µs/round trip, p50 +{r['overhead_p50_us']:.0f} µs over direct"
    delivered = sum(s["deliveries"] for s in r["steps"])
    cpu = r["server_cpu_seconds"] * 1e6 / delivered if delivered else float("nan")
    return -r["latency_p99_ms"], "-p99 ms", f"p99 {r['latency_p99_ms']:.1f} ms, gateway CPU {cpu:.2f} µs/delivery, lost {r['lost']}"


by = {}
for r in runs:
    value, name, text = figures(r)
    by.setdefault(r["ab_pair"], {})[r["ab_side"]] = value
    print(f"pair {r['ab_pair']} {r['ab_side']}: {abs(value):,.1f} {name.lstrip('-')}; {text}")
pairs = [p for p in by.values() if "A" in p and "B" in p]
wins = sum(1 for p in pairs if p["B"] > p["A"])
med = {s: statistics.median(abs(p[s]) for p in pairs) for s in ("A", "B")} if pairs else {}
if pairs:
    print(f"median A {med['A']:,.1f}, B {med['B']:,.1f} ({name.lstrip('-')}); B better in {wins} of {len(pairs)} pairs")
EOF
