#!/usr/bin/env bash
# Soak: ordinary traffic plus hostile clients against one gateway for
# DURATION seconds, sampling the gateway's RSS (issue 14's acceptance: RSS
# flat within 10 %, ordinary p99s within 20 % of a run without the hostile
# clients, nothing ordinary lost).
#
#   bench/soak.sh > soak.jsonl                    # 15,000 ordinary + 1,000 hostile, 600 s
#   HOSTILE=0 bench/soak.sh > baseline.jsonl      # the same ordinary load alone
#   COMPARE=1 bench/soak.sh > soak.jsonl          # both back to back (baseline first) + the ratios
#   DURATION=60 ORDINARY=1000 RPC_CLIENTS=100 HOSTILE=100 bench/soak.sh   # a short trial
#
# Each run gets a fresh gateway (start_gateway in bench/lib.sh) with its
# connect, close and forward hooks on `rainbow-bench backend --echo`, every
# other setting at its default (the limits are part of what is tested;
# GATEWAY_SET adds settings). The load, all from rainbow-bench processes
# started side by side (each holds at most ~19,000 sockets):
#
#   ordinary, ORDINARY connections in two groups:
#   - fan-out path: ORDINARY - RPC_CLIENTS subscribers of channel `soak`
#     (`rainbow-bench fanout`, subscribed by the connect hook), receiving
#     PUBLISH_RATE signed /send/ publications per second at qos QOS (each
#     reaching every subscriber): delivery latency (publish to receipt)
#     p50/p99, deliveries lost, sequence gaps;
#   - forward path: RPC_CLIENTS clients (`rainbow-bench rpc
#     --rate-per-client`), each sending RPC_RATE qos-1 messages per second,
#     forwarded to the echo backend, whose answer comes back as the ACK:
#     round trip p50/p99, requests unanswered within 5 s;
#   hostile: HOSTILE connections of `rainbow-bench hostile`, every attack in
#     turn for ATTACK_SECS each (HOSTILE_ARGS adds arguments, e.g.
#     "--attacks rel-flood,dup-flood --rel-rate 1000"), started HOSTILE_LEAD
#     s before the ordinary clients (which so open under attack) and stopped
#     with SIGTERM (it still reports) once they are done.
#
# Timeline: the ordinary clients start at T; the rpc clients measure from
# T + LEAD for DURATION s (the fan-out step starts about then too: its pause
# after the warm-up is set to fit); the measured window runs from T + LEAD
# to the end of the first ordinary run. The gateway's VmRSS is sampled every
# SAMPLE s (/proc); "the start of the steady state" is the first sample
# SETTLE s into the window (default 60 s, at most DURATION / 4), compared
# with the window's last sample (drift) and its highest (max).
#
# Guard: the machine is shared, and a gateway without defences can grow
# without bound (in the first trial, 12 dup-flood connections took it to
# 11.8 GB in 40 s). If its RSS passes RSS_LIMIT_MB, the hostile run is
# stopped there (it still reports) and the line says `rss_limit_hit`.
#
# Output: one JSON line per run ("bench": "soak", fields in bench/soak.py,
# with the three rainbow-bench result lines nested), and with COMPARE=1 a
# "soak-compare" line (hostile ÷ baseline p50/p99 ratios, the acceptance
# checks); a table on stderr. Raw files stay in the temporary directory
# only if the script fails.
#
# Priority: every process runs at BENCH_NICE; HOSTILE_NICE (default the
# same) sets the hostile generator's. On a 2-core machine the generator
# alone takes most of a core (a real attacker's machines are not the
# gateway's), so HOSTILE_NICE=19 stands for attackers with CPUs of their
# own: the kernel serves the gateway and the ordinary clients first, and the
# generator sends what it gets CPU for (its achieved attempts and frames are
# in the result).
#
# Environment: DURATION (600), ORDINARY (15000), RPC_CLIENTS (1000),
# RPC_RATE (1 per client per second), PUBLISH_RATE (1 per second), QOS (1),
# PAYLOAD (64 bytes), HOSTILE (1000; 0 = baseline), ATTACK_SECS (30),
# HOSTILE_ARGS, HOSTILE_LEAD (10 s), LEAD (20 s), SETTLE (60 s), SAMPLE (5 s),
# OPEN_RATE (ordinary connections opened per second, 2000), GATEWAY_SET
# ("key=value ..."), COMPARE (0), RSS_LIMIT_MB (8192; 0 = none), RAINBOW_BIN / BENCH_BIN (default
# CARGO_TARGET_DIR or target, release, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
HOSTILE_NICE=${HOSTILE_NICE:-$BENCH_NICE}

DURATION=${DURATION:-600}
ORDINARY=${ORDINARY:-15000}
RPC_CLIENTS=${RPC_CLIENTS:-1000}
RPC_RATE=${RPC_RATE:-1}
PUBLISH_RATE=${PUBLISH_RATE:-1}
QOS=${QOS:-1}
PAYLOAD=${PAYLOAD:-64}
HOSTILE=${HOSTILE:-1000}
ATTACK_SECS=${ATTACK_SECS:-30}
HOSTILE_ARGS=${HOSTILE_ARGS:-}
HOSTILE_LEAD=${HOSTILE_LEAD:-10}
LEAD=${LEAD:-20}
SETTLE=${SETTLE:-$((DURATION / 4 < 60 ? DURATION / 4 : 60))}
SAMPLE=${SAMPLE:-5}
OPEN_RATE=${OPEN_RATE:-2000}
GATEWAY_SET=${GATEWAY_SET:-}
COMPARE=${COMPARE:-0}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-8192}

SUBSCRIBERS=$((ORDINARY - RPC_CLIENTS))
if [[ $SUBSCRIBERS -lt 1 || $RPC_CLIENTS -lt 1 ]]; then
  echo "ORDINARY ($ORDINARY) must exceed RPC_CLIENTS ($RPC_CLIENTS), both at least 1" >&2
  exit 2
fi
if [[ $((ORDINARY + HOSTILE)) -gt 19000 ]]; then
  echo "warning: ORDINARY + HOSTILE = $((ORDINARY + HOSTILE)) connections; one gateway process holds about 19,000 here" >&2
fi

ensure_release
results="$BENCH_TMP/soak.jsonl"
: >"$results"

now() { date +%s.%N; }

# over_limit FILE: whether the last RSS sample in FILE passes RSS_LIMIT_MB.
over_limit() {
  [[ $RSS_LIMIT_MB -gt 0 && -s $1 ]] || return 1
  local rss
  rss=$(tail -n 1 "$1" | cut -d' ' -f2)
  [[ -n $rss && $rss -gt $((RSS_LIMIT_MB * 1024)) ]]
}

# guard_sleep SECONDS FILE PID: sleeps, stopping PID (the hostile run) if
# the gateway's RSS passes the limit meanwhile.
guard_sleep() {
  local i
  for ((i = 0; i < $1; i++)); do
    if [[ -z $limit_hit ]] && over_limit "$2"; then stop_hostile "$3"; fi
    sleep 1
  done
}

# stop_hostile PID: SIGTERM to the hostile run (it reports) and notes why.
stop_hostile() {
  limit_hit=$(now)
  echo "soak: the gateway's RSS passed RSS_LIMIT_MB=$RSS_LIMIT_MB; stopping the hostile clients" >&2
  kill -TERM "$1" 2>/dev/null || true
}

# run_soak LABEL HOSTILE_COUNT: one run on a fresh gateway and backend; its
# summary line to stdout and the results file.
run_soak() {
  local label=$1 hostile=$2
  local dir="$BENCH_TMP/run-$label"
  mkdir -p "$dir"
  start_backend --echo
  local sets=(--set "connect_url=$BE_URL/connect/" --set "close_url=$BE_URL/close/"
    --set "forward_url=$BE_URL/message/{message_type}/")
  local kv
  for kv in $GATEWAY_SET; do sets+=(--set "$kv"); done
  start_gateway "$(dirname "$RAINBOW")" "${sets[@]}"
  wait_quiet
  local busy=$MACHINE_BUSY
  python3 bench/soak.py sample "$GW_PID" "$SAMPLE" >"$dir/rss.txt" &
  local sampler=$!
  EXTRA_PIDS+=("$sampler")
  local hpid=
  limit_hit=
  if [[ $hostile -gt 0 ]]; then
    # shellcheck disable=SC2086 # HOSTILE_ARGS is a list of arguments
    nice -n "$HOSTILE_NICE" "$BENCH_BIN" hostile --url "$GW_URL" -n "$hostile" --attack-secs "$ATTACK_SECS" \
      --duration $((HOSTILE_LEAD + LEAD + DURATION + 3600)) --pid "$GW_PID" --no-progress $HOSTILE_ARGS \
      >"$dir/hostile.json" 2>"$BENCH_TMP/hostile-$label.err" &
    hpid=$!
    EXTRA_PIDS+=("$hpid")
    echo "soak ($label): $hostile hostile connections started, ordinary ones in $HOSTILE_LEAD s" >&2
    guard_sleep "$HOSTILE_LEAD" "$dir/rss.txt" "$hpid"
  fi
  local t_ord
  t_ord=$(now)
  # The fan-out step should start about when the rpc window does (LEAD s
  # in): its subscribers open at OPEN_RATE, then a warm-up of a second or two.
  local pause=$((LEAD - SUBSCRIBERS / OPEN_RATE - 1))
  [[ $pause -ge 1 ]] || pause=1
  nice -n "$BENCH_NICE" "$BENCH_BIN" fanout --url "$GW_URL" -n "$SUBSCRIBERS" --rate "$OPEN_RATE" --channel soak \
    --qos "$QOS" --publish-rate "$PUBLISH_RATE" --payload-size "$PAYLOAD" --duration "$DURATION" --drain 10 \
    --pause "$pause" --lag-ms 2000 --warmup-timeout 120 --pid "$GW_PID" --no-progress \
    >"$dir/fanout.json" 2>"$BENCH_TMP/fanout-$label.err" &
  local fpid=$!
  nice -n "$BENCH_NICE" "$BENCH_BIN" rpc --url "$GW_URL" --clients "$RPC_CLIENTS" --rate-per-client "$RPC_RATE" \
    --warmup "$LEAD" --duration "$DURATION" --payload-size "$PAYLOAD" --timeout 5 --pid "$GW_PID" \
    --backend-pid "$BE_PID" --no-progress >"$dir/rpc.json" 2>"$BENCH_TMP/rpc-$label.err" &
  local rpid=$!
  EXTRA_PIDS+=("$fpid" "$rpid")
  echo "soak ($label): $SUBSCRIBERS subscribers and $RPC_CLIENTS rpc clients started; measuring from $LEAD s for $DURATION s" >&2
  # The window ends when the first ordinary run ends.
  while kill -0 "$fpid" 2>/dev/null && kill -0 "$rpid" 2>/dev/null; do
    if [[ -n $hpid && -z $limit_hit ]] && over_limit "$dir/rss.txt"; then stop_hostile "$hpid"; fi
    sleep 1
  done
  local t_end
  t_end=$(now)
  local status=0
  wait "$fpid" || status=$?
  [[ $status -eq 0 ]] || echo "soak ($label): fanout failed ($status), see below" >&2
  wait "$rpid" || status=$?
  [[ $status -eq 0 ]] || echo "soak ($label): rpc failed ($status)" >&2
  if [[ -n $hpid ]]; then
    kill -TERM "$hpid" 2>/dev/null || true
    wait "$hpid" || echo "soak ($label): hostile failed ($?)" >&2
  fi
  python3 - "$dir/run.json" <<PY
import json, sys
json.dump({
    "date": "$(date -u +%FT%TZ)", "duration": $DURATION, "ordinary": $ORDINARY, "subscribers": $SUBSCRIBERS,
    "rpc_clients": $RPC_CLIENTS, "rpc_rate": $RPC_RATE, "publish_rate": $PUBLISH_RATE, "qos": $QOS,
    "hostile": $hostile, "attack_secs": $ATTACK_SECS, "hostile_args": "$HOSTILE_ARGS", "hostile_nice": $HOSTILE_NICE, "settle": $SETTLE,
    "gateway_settings": "$GATEWAY_SET", "machine_busy_before": $busy,
    "ordinary_start": $t_ord, "window_start": $t_ord + $LEAD, "window_end": $t_end,
    "rss_limit_mb": $RSS_LIMIT_MB, "rss_limit_hit": ${limit_hit:-None},
}, open(sys.argv[1], "w"))
PY
  stop_gateway
  stop_backend
  stop_pid "$sampler"
  EXTRA_PIDS=()
  python3 bench/soak.py summary "$dir" | tee -a "$results"
  local f
  for f in "$BENCH_TMP"/*-"$label".err; do
    if [[ -s $f ]]; then grep -v '^ ' "$f" | tail -n 3 | sed "s|^|$(basename "$f" .err): |" >&2 || true; fi
  done
  return "$status"
}

if [[ $COMPARE == 1 ]]; then
  run_soak baseline 0
  run_soak hostile "$HOSTILE"
  python3 bench/soak.py compare <(head -n 1 "$results") <(tail -n 1 "$results") | tee -a "$results"
elif [[ $HOSTILE -gt 0 ]]; then
  run_soak hostile "$HOSTILE"
else
  run_soak baseline 0
fi
python3 bench/soak.py table "$results" >&2
