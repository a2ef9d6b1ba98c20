#!/usr/bin/env bash
# Fan-out over a cluster of Rainbow nodes sharing one Redis (issue #6).
#
#   bench/cluster.sh > cluster.jsonl                    # compare: 1 node vs 3 nodes
#   MODE=scale bench/cluster.sh > scale.jsonl           # 8 nodes, 150,000 subscribers
#
# compare (the default): for each node count in NODES_LIST, N subscribers on
#   one channel spread round robin over the nodes (rainbow-bench fanout with
#   one --url per node), publications through the first node's /send/:
#     1. saturation: offered deliveries/s from START, x FACTOR per step of
#        STEP_SECS seconds, until a step lags;
#     2. latency: a fresh cluster at FIXED offered deliveries/s for FIXED_SECS.
#   Every run has a fresh Redis and fresh nodes. The single node is clustered
#   too (its /send/ goes through Redis), so the two differ only in the spread.
#
# scale: NODES nodes hold N subscribers together (the bench splits itself
#   over processes of at most 18,000 connections; each node stays under its
#   20,000 open files). Publications at SCALE_RATE per second for SCALE_SECS
#   must reach every subscriber on every node. While the subscribers are held,
#   a sampler reads /serverinfo/?cluster=1 from the last node (connections per
#   node as the cluster itself reports them) and makes one signed qos-1 /send/
#   through it, whose "connections" must count every acknowledgement from
#   every node.
#
# Environment: MODE (compare), N (compare 19000, scale 150000), NODES_LIST
# ("1 3"), NODES (scale: 8), ROUNDS (1), START (50000), FACTOR (1.25),
# MAX_STEPS (20), STEP_SECS (10), FIXED (100000), FIXED_SECS (20),
# SCALE_RATE (0.2 publications/s), SCALE_SECS (30), PAYLOAD (64), RATE
# (subscriber connections per second: compare 2000, scale 2500), LAG_MS
# (compare 2000, scale 60000),
# RAINBOW_BIN / BENCH_BIN (default target/release, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
unset PORT

MODE=${MODE:-compare}
NODES_LIST=${NODES_LIST:-1 3}
NODES=${NODES:-8}
ROUNDS=${ROUNDS:-1}
START=${START:-50000}
FACTOR=${FACTOR:-1.25}
MAX_STEPS=${MAX_STEPS:-20}
STEP_SECS=${STEP_SECS:-10}
FIXED=${FIXED:-100000}
FIXED_SECS=${FIXED_SECS:-20}
SCALE_RATE=${SCALE_RATE:-0.2}
SCALE_SECS=${SCALE_SECS:-30}
PAYLOAD=${PAYLOAD:-64}
CHANNEL=bench-cluster
case $MODE in
  compare) N=${N:-19000} RATE=${RATE:-2000} LAG_MS=${LAG_MS:-2000} ;;
  scale) N=${N:-150000} RATE=${RATE:-2500} LAG_MS=${LAG_MS:-60000} ;;
  *) echo "MODE must be compare or scale, not $MODE" >&2; exit 2 ;;
esac

ensure_release
# The scale run's sampler signs its /send/ with the Python SDK.
SDK_PYTHON=${SDK_PYTHON:-clients/python/.venv/bin/python}
if [[ $MODE == scale ]] && ! "$SDK_PYTHON" -c 'import rainbow.backend' 2>/dev/null; then
  echo "$SDK_PYTHON cannot import the Python SDK: run clients/python/test.sh once (it creates that venv), or set SDK_PYTHON" >&2
  exit 1
fi
start_backend
results="$BENCH_TMP/cluster.jsonl"
: >"$results"

# cluster_up K: a fresh Redis and K fresh nodes, hooked to the backend.
cluster_up() {
  start_redis
  start_nodes "$1" "$(dirname "$RAINBOW")" --set "connect_url=$BE_URL/connect/"
}

cluster_down() {
  stop_nodes
  stop_redis
}

# run_fanout NODES MODE [extra fanout args]: one rainbow-bench fanout run over
# every node's URL, its JSON line tagged and appended to the results.
run_fanout() {
  local nodes=$1 mode=$2 url line
  shift 2
  local urls=()
  for url in "${NODE_URLS[@]}"; do urls+=(--url "$url"); done
  wait_quiet
  local busy=$MACHINE_BUSY
  # shellcheck disable=SC2046 # word splitting of the --pid list is intended
  if ! line=$(bench fanout "${urls[@]}" --channel "$CHANNEL" -n "$N" --rate "$RATE" --payload-size "$PAYLOAD" --lag-ms "$LAG_MS" \
    $(pid_args "${NODE_PIDS[@]}") --no-progress "$@"); then
    line=$(tag_json '{"bench":"fanout"}' "target=rainbow" "error=run failed (see stderr)")
  fi
  line=$(tag_json "$line" "nodes=$nodes" "mode=$mode" "round=$round" "machine_busy_before=$busy" "date=$(date -u +%FT%TZ)")
  echo "$line" | tee -a "$results"
}

# sample_cluster BASE OUT: until the bench is done (OUT.stop exists), reads
# BASE/serverinfo/?cluster=1 every 2 s; once every node together holds N
# connections, records that view and one signed qos-1 /send/ through BASE in
# OUT as a JSON line, then keeps the largest RSS seen per node.
sample_cluster() {
  "$SDK_PYTHON" - "$1" "$2" "$N" "$CHANNEL" <<'PY'
import json, os, sys, time, urllib.request
from rainbow.backend.api import RainbowAPI

base, out, want, channel = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
api = RainbowAPI(base, "bench", timeout=60)
record = {"bench": "cluster-check", "want_connections": want}
peak = {}
while not os.path.exists(out + ".stop"):
    try:
        with urllib.request.urlopen(base + "/serverinfo/?cluster=1", timeout=10) as r:
            info = json.load(r)
    except Exception as exc:  # the cluster may be busy delivering: try again
        record["last_error"] = str(exc)
        time.sleep(2)
        continue
    nodes = info.get("nodes", [])
    for n in nodes:
        peak[n["node"]] = max(peak.get(n["node"], 0), n.get("memory_bytes", 0))
    total = sum(n.get("connections", 0) for n in nodes)
    if "send" not in record and total >= want:
        record["per_node"] = [{k: n.get(k) for k in ("node", "port", "connections", "memory_bytes")} for n in nodes]
        record["total_connections"] = total
        start = time.monotonic()
        try:
            acked, reply = api.send(channel, 1999, "cluster-check", qos=1, timeout=60)
            record["send"] = {"channel": channel, "qos": 1, "connections": acked,
                              "seconds": round(time.monotonic() - start, 3)}
        except Exception as exc:
            record["send"] = {"channel": channel, "error": str(exc)}
    time.sleep(2)
record["peak_memory_bytes"] = peak
print(json.dumps(record, separators=(",", ":")))
PY
}

compare() {
  local k mode
  for round in $(seq "$ROUNDS"); do
    for k in $NODES_LIST; do
      for mode in saturation fixed; do
        cluster_up "$k"
        if [[ $mode == saturation ]]; then
          run_fanout "$k" saturation --find-saturation --deliveries-per-sec "$START" --step-factor "$FACTOR" \
            --max-steps "$MAX_STEPS" --duration "$STEP_SECS"
        else
          run_fanout "$k" fixed --deliveries-per-sec "$FIXED" --duration "$FIXED_SECS"
        fi
        cluster_down
      done
    done
  done
  python3 - "$results" >&2 <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| nodes | round | saturation deliveries/s | p50 / p99 ms at fixed rate | achieved at fixed | server CPU µs per delivery (fixed) | lost |")
print("|---|---|---|---|---|---|---|")
keys = sorted({(r.get("nodes"), r.get("round")) for r in rows})
for nodes, rnd in keys:
    sat = next((r for r in rows if (r.get("nodes"), r.get("round"), r.get("mode")) == (nodes, rnd, "saturation")), {})
    fix = next((r for r in rows if (r.get("nodes"), r.get("round"), r.get("mode")) == (nodes, rnd, "fixed")), {})
    step = (fix.get("steps") or [{}])[0]
    cpu = step.get("server_cpu_seconds")
    per = f"{cpu / step['deliveries'] * 1e6:.1f}" if cpu and step.get("deliveries") else "–"
    s = sat.get("saturation_deliveries_per_sec")
    print(f"| {nodes} | {rnd} | {s:,.0f} | {fix.get('latency_p50_ms', '–')} / {fix.get('latency_p99_ms', '–')} | "
          f"{fix.get('achieved_deliveries_per_sec', 0):,.0f} | {per} | {sat.get('lost', '–')} / {fix.get('lost', '–')} |"
          if s is not None else f"| {nodes} | {rnd} | {sat.get('error', '–')} | | | | |")
PY
}

scale() {
  round=1
  cluster_up "$NODES"
  local last=$((NODES - 1)) sampler_out="$BENCH_TMP/sampler.json"
  sample_cluster "${NODE_BASES[$last]}" "$sampler_out" >"$sampler_out" &
  local sampler=$!
  run_fanout "$NODES" scale --publish-rate "$SCALE_RATE" --duration "$SCALE_SECS" --drain 30 \
    --warmup-timeout 300 --publish-timeout 60
  touch "$sampler_out.stop"
  wait "$sampler" || true
  [[ -s "$sampler_out" ]] || { echo "the cluster sampler reported nothing" >&2; cluster_down; return 1; }
  tag_json "$(cat "$sampler_out")" "nodes=$NODES" "date=$(date -u +%FT%TZ)" | tee -a "$results"
  cluster_down
  # The run fails unless the cluster listed every connection and the qos-1
  # /send/ through the last node was acknowledged by every one of them.
  python3 - "$sampler_out" "$N" <<'PY' >&2
import json, sys
r, want = json.load(open(sys.argv[1])), int(sys.argv[2])
acked = r.get("send", {}).get("connections")
print(f"cluster check: {r.get('total_connections')} connections listed, qos-1 send acknowledged by {acked} of {want}")
sys.exit(0 if r.get("total_connections") == want and acked == want else 1)
PY
}

"$MODE"
