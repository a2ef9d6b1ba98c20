# Shared helpers of the bench/ scripts. Source it; every server started
# through it is stopped on exit (trap EXIT), whatever happens.
#
#   start_gateway BIN_DIR [--set KEY=VALUE...]   Rainbow on a free loopback port;
#       sets GW_PID, GW_PORT, GW_URL, GW_LOG. No hooks unless --set adds them.
#       RAINBOW_BIN (a path to the `rainbow` binary) wins over BIN_DIR/rainbow.
#   start_backend [ARGS...]                      `rainbow-bench backend ARGS` (e.g. --echo)
#       on a free port; sets BE_PID, BE_PORT, BE_URL.
#   start_floor [--forward URL]                  `rainbow-bench floor` on a free port;
#       sets FLOOR_PID, FLOOR_PORT.
#   start_nchan                                  nginx + Nchan (bench/peers/nginx.conf.in);
#       sets NCHAN_PID (master), NCHAN_PIDS (master and workers), NCHAN_PORT.
#   start_pushpin                                Pushpin routed to the backend;
#       sets PUSHPIN_PID (runner), PUSHPIN_PIDS, PUSHPIN_PORT, PUSHPIN_PUBLISH.
#   start_redis                                  redis-server on a free port, no persistence;
#       sets REDIS_PID, REDIS_URL.
#   start_nodes K BIN_DIR [--set ...]            K Rainbow nodes clustered over REDIS_URL;
#       sets NODE_PIDS, NODE_URLS (arrays) and NODE_BASES (http://HOST:PORT each).
#   stop_gateway / stop_backend / stop_floor / stop_nchan / stop_pushpin / stop_redis / stop_nodes
#   pid_args PID...                              "--pid P" for each id
#   EXTRA_PIDS+=(PID)                            other processes a script started in the
#       background (bench runs, samplers): stopped on exit too.
#
# BENCH_BIN is the rainbow-bench binary (default target/release/rainbow-bench,
# or BIN_DIR/rainbow-bench once set_bins has run); `bench` runs it with the
# scripts' priority (BENCH_NICE).

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/rainbow-bench.XXXXXX")

# Scheduling priority of everything the scripts start (servers, peers, the
# bench): as root, -10 by default, so that other work on the machine (a
# compile) disturbs the figures less; the same for every server compared.
# `nice` execs its command, so $! is still the server's own pid.
if [[ $(id -u) -eq 0 ]]; then BENCH_NICE=${BENCH_NICE:--10}; else BENCH_NICE=${BENCH_NICE:-0}; fi
GW_PID=
BE_PID=
NCHAN_PID=
PUSHPIN_PID=
GW_LOG="$BENCH_TMP/gateway.log"
REDIS_PID=
NODE_PIDS=()
NODE_URLS=()
NODE_BASES=()
EXTRA_PIDS=()

# set_bins BIN_DIR: RAINBOW and BENCH_BIN from RAINBOW_BIN / BENCH_BIN or BIN_DIR.
set_bins() {
  RAINBOW=${RAINBOW_BIN:-$1/rainbow}
  BENCH_BIN=${BENCH_BIN:-$1/rainbow-bench}
}

# stop_pid PID [SIGNAL]: signal one process we started and wait for it (5 s, then KILL).
stop_pid() {
  local pid=$1 sig=${2:-TERM}
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local status=$? pid
  for pid in "${EXTRA_PIDS[@]}"; do stop_pid "$pid"; done
  stop_pushpin
  stop_nchan
  stop_nodes
  stop_redis
  stop_pid "${GW_PID:-}"
  stop_pid "${BE_PID:-}"
  stop_floor
  if [[ $status -ne 0 ]]; then
    for log in "$GW_LOG" "$BENCH_TMP"/node-*.log "$BENCH_TMP"/redis.log "$BENCH_TMP"/*.err "$BENCH_TMP"/nginx/error.log "$BENCH_TMP"/pushpin/out.log; do
      if [[ -s "$log" ]]; then
        echo "--- last lines of $log ---" >&2
        tail -n 20 "$log" >&2 || true
      fi
    done
  else
    rm -rf "$BENCH_TMP"
  fi
  exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_free PORT: whether nothing listens on 127.0.0.1:PORT.
port_free() {
  python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# wait_ready PID NAME WHAT COMMAND...: runs COMMAND every 0.1 s until it
# succeeds (0) or PID dies or 10 s pass (1, saying "NAME did not answer WHAT").
wait_ready() {
  local pid=$1 name=$2 what=$3
  shift 3
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "$name exited during startup" >&2; return 1; }
    "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not answer $what within 10 s" >&2
  return 1
}

# http_answers URL: whether URL answers at all (any HTTP status).
http_answers() {
  python3 -c '
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1).read()
except urllib.error.HTTPError:
    pass' "$1"
}

# wait_http URL PID NAME: until URL answers (any HTTP status) or PID dies (10 s).
wait_http() {
  wait_ready "$2" "$3" "$1" http_answers "$1"
}

# start_gateway BIN_DIR [extra --set arguments...]
start_gateway() {
  local bin=$1
  shift
  local exe=${RAINBOW_BIN:-$bin/rainbow}
  # The Python suite's RAINBOW_BIN names rainbow-server, whose command line
  # has no `serve`; its sibling `rainbow` is the same gateway.
  [[ $(basename "$exe") == rainbow-server ]] && exe="$(dirname "$exe")/rainbow"
  GW_PORT=${PORT:-$(free_port)}
  GW_URL="ws://127.0.0.1:$GW_PORT/connect/"
  RUST_LOG=${RUST_LOG:-warn} nice -n "$BENCH_NICE" "$exe" serve \
    --set security_token=bench \
    --set connect_url= \
    --set close_url= \
    --set forward_url= \
    --set bind=127.0.0.1 \
    --set "http_port=$GW_PORT" \
    --set max_connections=200000 \
    "$@" >"$GW_LOG" 2>&1 &
  GW_PID=$!
  local url="http://127.0.0.1:$GW_PORT/hello/"
  wait_ready "$GW_PID" "the gateway" "$url" python3 -c \
    'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).read().strip() == b"ok" else 1)' \
    "$url" || return 1
  echo "gateway pid $GW_PID listening on 127.0.0.1:$GW_PORT" >&2
}

# stop_gateway: SIGTERM, then wait for it.
stop_gateway() {
  stop_pid "${GW_PID:-}"
  GW_PID=
}

# start_redis: a private redis-server on a free loopback port, without
# persistence (scripts/install-deps.sh installs it).
start_redis() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/install-deps.sh)" >&2; return 1; }
  local port
  port=$(free_port)
  nice -n "$BENCH_NICE" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --maxclients 1000 >"$BENCH_TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  REDIS_URL="redis://127.0.0.1:$port/"
  wait_ready "$REDIS_PID" redis-server PING python3 -c \
    'import socket, sys; s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' \
    "$port" || return 1
  echo "redis pid $REDIS_PID on $REDIS_URL" >&2
}

stop_redis() {
  stop_pid "${REDIS_PID:-}"
  REDIS_PID=
}

# start_nodes K BIN_DIR [extra --set arguments...]: K gateway nodes of one
# cluster (cluster_name "bench") on REDIS_URL, each on its own free port with
# its own log (BENCH_TMP/node-I.log).
start_nodes() {
  local k=$1 bin=$2 i
  shift 2
  for i in $(seq "$k"); do
    GW_LOG="$BENCH_TMP/node-$i.log"
    start_gateway "$bin" --set "redis_url=$REDIS_URL" --set cluster_name=bench "$@" || return 1
    NODE_PIDS+=("$GW_PID")
    NODE_URLS+=("$GW_URL")
    NODE_BASES+=("http://127.0.0.1:$GW_PORT")
    GW_PID=
  done
  GW_LOG="$BENCH_TMP/gateway.log"
}

# stop_nodes: SIGTERM to every node, then wait for them.
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
  NODE_PIDS=()
  NODE_URLS=()
  NODE_BASES=()
}

# start_bench_server KIND [ARGS...]: `rainbow-bench KIND --port 0 ARGS...`
# (backend or floor) on a free port, once it has printed its JSON line; sets
# SRV_PID, SRV_PORT.
start_bench_server() {
  local kind=$1
  shift
  nice -n "$BENCH_NICE" "$BENCH_BIN" "$kind" --port 0 "$@" >"$BENCH_TMP/$kind.out" 2>"$BENCH_TMP/$kind.err" &
  SRV_PID=$!
  for _ in $(seq 100); do
    if [[ -s "$BENCH_TMP/$kind.out" ]]; then
      SRV_PORT=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["listening"].rsplit(":", 1)[1])' "$BENCH_TMP/$kind.out")
      echo "$kind pid $SRV_PID listening on 127.0.0.1:$SRV_PORT" >&2
      return 0
    fi
    kill -0 "$SRV_PID" 2>/dev/null || { echo "the $kind exited during startup" >&2; return 1; }
    sleep 0.1
  done
  echo "the $kind did not start within 10 s" >&2
  return 1
}

# start_backend [ARGS...]: `rainbow-bench backend ARGS` on a free port (needs BENCH_BIN).
start_backend() {
  start_bench_server backend "$@" || return 1
  BE_PID=$SRV_PID BE_PORT=$SRV_PORT
  BE_URL="http://127.0.0.1:$BE_PORT"
}

# start_floor [ARGS...]: `rainbow-bench floor` (one send(2) per fan-out
# delivery, Nchan's URLs; `--forward URL` relays rpc clients) on a free port;
# sets FLOOR_PID, FLOOR_PORT.
start_floor() {
  start_bench_server floor "$@" || return 1
  FLOOR_PID=$SRV_PID FLOOR_PORT=$SRV_PORT
}

stop_floor() {
  stop_pid "${FLOOR_PID:-}"
  FLOOR_PID=
}

stop_backend() {
  stop_pid "${BE_PID:-}"
  BE_PID=
}

# Worker processes: nginx workers as many as cores, like Rainbow's runtime threads.
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}

# start_nchan: a private nginx with the Nchan module on a free port, running
# as the current user, every path inside BENCH_TMP.
start_nchan() {
  command -v nginx >/dev/null || { echo "nginx is not installed (bench/install-peers.sh)" >&2; return 1; }
  local module=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
  [[ -f "$module" ]] || { echo "$module is missing (bench/install-peers.sh)" >&2; return 1; }
  local dir="$BENCH_TMP/nginx"
  mkdir -p "$dir"
  NCHAN_PORT=$(free_port)
  sed -e "s#@MODULE@#$module#g" -e "s#@DIR@#$dir#g" -e "s#@PORT@#$NCHAN_PORT#g" \
    -e "s#@WORKERS@#$NGINX_WORKERS#g" -e "s#@USER@#$(id -un) $(id -gn)#g" \
    bench/peers/nginx.conf.in >"$dir/nginx.conf"
  nice -n "$BENCH_NICE" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  NCHAN_PID=$!
  wait_http "http://127.0.0.1:$NCHAN_PORT/" "$NCHAN_PID" nginx || return 1
  NCHAN_PIDS="$NCHAN_PID $(pgrep -P "$NCHAN_PID" | tr '\n' ' ')"
  echo "nginx+nchan master pid $NCHAN_PID (workers: ${NCHAN_PIDS#"$NCHAN_PID "}) on 127.0.0.1:$NCHAN_PORT" >&2
}

stop_nchan() {
  # SIGTERM to the master: fast shutdown, it takes its workers down.
  stop_pid "${NCHAN_PID:-}"
  NCHAN_PID=
}

# start_pushpin: a private Pushpin (condure, zurl, proxy, handler) on a free
# port, routing every path to the backend over WebSocket-over-HTTP, with its
# publish API on 5561 (or 5561 + a free offset). Needs BE_PORT.
start_pushpin() {
  command -v pushpin >/dev/null || { echo "pushpin is not installed (bench/install-peers.sh)" >&2; return 1; }
  local dir="$BENCH_TMP/pushpin" offset=0
  mkdir -p "$dir/run" "$dir/log"
  # The publish API is on 5561 + port_offset; the handler also binds 5560, 5562, 5563.
  while ! { port_free $((5560 + offset)) && port_free $((5561 + offset)) && port_free $((5562 + offset)) && port_free $((5563 + offset)); }; do
    offset=$((offset + 10))
    [[ $offset -lt 1000 ]] || { echo "no free port_offset for Pushpin's 5560-5563" >&2; return 1; }
  done
  PUSHPIN_PORT=$(free_port)
  PUSHPIN_PUBLISH="http://127.0.0.1:$((5561 + offset))/publish/"
  # Debian's internal.conf points zurl at /var/run/zurl (its system service);
  # ours runs its own zurl under the run directory.
  sed 's#ipc:///var/run/zurl/zurl-#ipc://{rundir}/{ipc_prefix}zurl-#' /usr/lib/pushpin/internal.conf >"$dir/internal.conf"
  echo "* 127.0.0.1:$BE_PORT,over_http" >"$dir/routes"
  sed -e "s#@DIR@#$dir#g" -e "s#@OFFSET@#$offset#g" bench/peers/pushpin.conf.in >"$dir/pushpin.conf"
  nice -n "$BENCH_NICE" pushpin --config "$dir/pushpin.conf" --port "127.0.0.1:$PUSHPIN_PORT" --merge-output >"$dir/out.log" 2>&1 &
  PUSHPIN_PID=$!
  wait_http "http://127.0.0.1:$((5561 + offset))/" "$PUSHPIN_PID" "pushpin (publish API)" || return 1
  wait_http "http://127.0.0.1:$PUSHPIN_PORT/" "$PUSHPIN_PID" "pushpin (client port)" || return 1
  PUSHPIN_PIDS="$(pgrep -P "$PUSHPIN_PID" | tr '\n' ' ')"
  echo "pushpin runner pid $PUSHPIN_PID (services: $PUSHPIN_PIDS) on 127.0.0.1:$PUSHPIN_PORT, publish $PUSHPIN_PUBLISH" >&2
}

stop_pushpin() {
  # The runner stops its services on SIGTERM.
  stop_pid "${PUSHPIN_PID:-}"
  PUSHPIN_PID=
}

# bench ARGS...: runs rainbow-bench at the scripts' priority.
bench() {
  nice -n "$BENCH_NICE" "$BENCH_BIN" "$@"
}

# pid_args PID...: --pid P for each.
pid_args() {
  local p
  for p in "$@"; do printf -- '--pid %s ' "$p"; done
}

# json_field JSON NAME: prints one top-level field of a JSON object.
json_field() {
  python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

# ensure_release: build the release binaries if missing (REBUILD=1 forces),
# unless RAINBOW_BIN / BENCH_BIN name binaries built elsewhere. They are in
# CARGO_TARGET_DIR/release when that is set, else target/release.
ensure_release() {
  local dir=${CARGO_TARGET_DIR:-target}/release
  set_bins "$dir"
  local need=()
  [[ -n "${RAINBOW_BIN:-}" || -x "$RAINBOW" ]] && [[ "${REBUILD:-0}" != 1 ]] || need+=(-p rainbow-gateway)
  [[ "$BENCH_BIN" != "$dir/rainbow-bench" || ( -x "$BENCH_BIN" && "${REBUILD:-0}" != 1 ) ]] || need+=(-p rainbow-bench)
  if [[ ${#need[@]} -gt 0 ]]; then
    echo "building release binaries (${need[*]}; slow on this machine)..." >&2
    cargo build --release "${need[@]}" >&2
  fi
  [[ -x "$RAINBOW" ]] || { echo "no gateway binary at $RAINBOW" >&2; return 1; }
  [[ -x "$BENCH_BIN" ]] || { echo "no bench binary at $BENCH_BIN" >&2; return 1; }
}

# cpu_busy SECONDS: percent of the machine's CPU time spent busy over the
# next SECONDS (all processes, ours included), not counting the `nice` column:
# work at a positive nice value (a background fuzzer) yields to the bench's
# processes, which run at BENCH_NICE.
cpu_busy() {
  python3 - "$1" <<'PY'
import sys, time
def snap():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    idle_or_nice = v[1] + v[3] + v[4]
    return total, idle_or_nice
t0, i0 = snap(); time.sleep(float(sys.argv[1])); t1, i1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0)), 1))
PY
}

# wait_quiet: waits until the machine is under QUIET_BUSY % busy (default 15)
# over 2 s, at most QUIET_WAIT seconds (default 300); sets MACHINE_BUSY to
# the last figure and says on stderr if it never got quiet. Other work on the
# same cores (a compile, a test suite) would distort every figure.
wait_quiet() {
  local limit=${QUIET_WAIT:-300} threshold=${QUIET_BUSY:-15} waited=0
  while :; do
    MACHINE_BUSY=$(cpu_busy 2)
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$MACHINE_BUSY" "$threshold"; then
      return 0
    fi
    if [[ $waited -ge $limit ]]; then
      echo "warning: the machine is still ${MACHINE_BUSY} % busy with other work; figures will be low" >&2
      return 0
    fi
    [[ $waited -eq 0 ]] && echo "waiting for the machine to be quiet (${MACHINE_BUSY} % busy)..." >&2
    sleep 5
    waited=$((waited + 7))
  done
}

# tag_json JSON KEY=VALUE...: adds string fields to a JSON object line.
tag_json() {
  python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for kv in sys.argv[2:]:
    k, _, x = kv.partition("=")
    try:
        v[k] = json.loads(x)
    except ValueError:
        v[k] = x
print(json.dumps(v, separators=(",", ":")))' "$@"
}
