#!/usr/bin/env python3
"""The helpers of bench/soak.sh.

    python3 bench/soak.py sample PID EVERY            prints "EPOCH RSS_KIB CPU_SECONDS" every EVERY s
                                                      from /proc/PID until PID is gone
    python3 bench/soak.py summary DIR                 one run's JSON line from the files in DIR
    python3 bench/soak.py compare BASELINE HOSTILE    the comparison line of two summary lines
    python3 bench/soak.py table [FILE]                the soak lines of FILE (or stdin) as a table

A run directory holds what soak.sh wrote: `run.json` (its settings and the
instants of the run: epochs of the ordinary start, of the measured window's
start and end), `rss.txt` (the sampler's lines), `fanout.json`, `rpc.json`
and `hostile.json` (the rainbow-bench result lines; a missing or empty one is
reported as an error of that part).

The summary's figures:

- RSS: `rss_start_kib` is the first sample at least SETTLE s into the
  measured window ("the start of the steady state"), `rss_end_kib` the last
  sample inside it, `rss_max_kib` the highest in between;
  `rss_drift_percent` = (end - start) / start, `rss_max_percent` =
  (max - start) / start, both x 100.
- Ordinary clients: rpc round trips (p50/p99 of the measured window, ms),
  fan-out deliveries (publish-to-receipt p50/p99 of the publishing step, ms),
  and what was lost: rpc requests unanswered within their timeout, deliveries
  missing, sequence gaps, ordinary connections that failed to open or were
  dropped by the gateway. `ordinary_lost` adds them up: it must be 0.
- Hostile clients: attempts and outcomes per attack (see `rainbow-bench help
  hostile`).

The comparison divides the hostile run's p50/p99 by the baseline's and checks
issue 14's acceptance: RSS flat within 10 % (drift and max), p99s within
20 %, nothing ordinary lost.
"""

import json
import os
import sys
import time

RSS_FLAT_PERCENT = 10.0
P99_WITHIN = 1.20


def sample(pid, every):
    every = float(every)
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            with open(f"/proc/{pid}/stat") as f:
                after = f.read().rsplit(")", 1)[1].split()
            cpu = (int(after[11]) + int(after[12])) / 100.0
        except (OSError, StopIteration, IndexError, ValueError):
            return
        print(f"{time.time():.3f} {rss} {cpu:.2f}", flush=True)
        time.sleep(every)


def read_json(path):
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


def read_samples(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append((float(parts[0]), int(parts[1]), float(parts[2])))
    except OSError:
        pass
    return out


def pct(a, b):
    return None if a is None or not b else round((a - b) * 100.0 / b, 2)


def rss_figures(samples, window_start, window_end, settle):
    """RSS at the steady state's start, its max and end, and the drifts."""
    inside = [s for s in samples if window_start <= s[0] <= window_end]
    steady = [s for s in inside if s[0] >= window_start + settle] or inside[-1:]
    if not steady:
        return {}
    start, end = steady[0], steady[-1]
    top = max(s[1] for s in steady)
    cpu = end[2] - inside[0][2] if inside else None
    return {
        "rss_start_kib": start[1],
        "rss_start_at_s": round(start[0] - window_start, 1),
        "rss_max_kib": top,
        "rss_end_kib": end[1],
        "rss_end_at_s": round(end[0] - window_start, 1),
        "rss_drift_percent": pct(end[1], start[1]),
        "rss_max_percent": pct(top, start[1]),
        "gateway_cpu_seconds": round(cpu, 2) if cpu is not None else None,
        "gateway_cpu_percent": round(cpu * 100.0 / max(1e-9, end[0] - inside[0][0]), 1) if cpu is not None else None,
    }


def summary(run_dir):
    run = read_json(os.path.join(run_dir, "run.json")) or {}
    samples = read_samples(os.path.join(run_dir, "rss.txt"))
    fanout = read_json(os.path.join(run_dir, "fanout.json"))
    rpc = read_json(os.path.join(run_dir, "rpc.json"))
    hostile = read_json(os.path.join(run_dir, "hostile.json")) if run.get("hostile", 0) > 0 else None
    errors = []
    for name, value in (("fanout", fanout), ("rpc", rpc)):
        if value is None:
            errors.append(f"{name}: no result (see its stderr)")
    if run.get("hostile", 0) > 0 and hostile is None:
        errors.append("hostile: no result (see its stderr)")
    t0 = run.get("ordinary_start", samples[0][0] if samples else 0.0)
    window_start = run.get("window_start", t0)
    window_end = run.get("window_end", samples[-1][0] if samples else t0)
    out = {
        "bench": "soak",
        "label": "hostile" if run.get("hostile", 0) > 0 else "baseline",
        "date": run.get("date"),
        "duration_secs": run.get("duration"),
        "window_secs": round(window_end - window_start, 1),
        "ordinary": run.get("ordinary"),
        "subscribers": run.get("subscribers"),
        "rpc_clients": run.get("rpc_clients"),
        "rpc_rate_per_client": run.get("rpc_rate"),
        "publish_rate": run.get("publish_rate"),
        "qos": run.get("qos"),
        "hostile": run.get("hostile"),
        "attack_secs": run.get("attack_secs"),
        "gateway_settings": run.get("gateway_settings"),
        "machine_busy_before": run.get("machine_busy_before"),
        "gateway_rss_idle_kib": samples[0][1] if samples else None,
        "rss_limit_mb": run.get("rss_limit_mb"),
        "rss_limit_hit_at_s": None if run.get("rss_limit_hit") is None else round(run["rss_limit_hit"] - window_start, 1),
    }
    if run.get("rss_limit_hit") is not None:
        errors.append(f"the gateway's RSS passed {run.get('rss_limit_mb')} MB: the hostile clients were stopped early")
    out.update(rss_figures(samples, window_start, window_end, float(run.get("settle", 60))))
    lost = 0
    if rpc is not None:
        leg = rpc.get("gateway") or {}
        out.update({
            "rpc_round_trips": leg.get("round_trips"),
            "rpc_per_sec": leg.get("round_trips_per_sec"),
            "rpc_p50_ms": round(leg.get("p50_us", 0) / 1000.0, 3),
            "rpc_p99_ms": round(leg.get("p99_us", 0) / 1000.0, 3),
            "rpc_failed": leg.get("failed"),
        })
        lost += (leg.get("failed") or 0) + rpc.get("connections_failed", 0) + rpc.get("connections_dropped", 0)
    if fanout is not None:
        step = (fanout.get("steps") or [{}])[0]
        out.update({
            "deliveries": step.get("deliveries"),
            "expected_deliveries": step.get("expected_deliveries"),
            "deliveries_per_sec": step.get("achieved_deliveries_per_sec"),
            "delivery_p50_ms": fanout.get("latency_p50_ms"),
            "delivery_p99_ms": fanout.get("latency_p99_ms"),
            "delivery_max_ms": fanout.get("latency_max_ms"),
            "delivery_lost": fanout.get("lost"),
            "delivery_gaps": fanout.get("gaps"),
            "delivery_duplicates": fanout.get("duplicates"),
            "publish_failed": step.get("publish_failed"),
        })
        lost += (fanout.get("lost") or 0) + (fanout.get("gaps") or 0) + (step.get("publish_failed") or 0)
        lost += fanout.get("connections_failed", 0) + fanout.get("connections_dropped", 0)
    out["ordinary_failed_opens"] = (rpc or {}).get("connections_failed", 0) + (fanout or {}).get("connections_failed", 0)
    out["ordinary_dropped"] = (rpc or {}).get("connections_dropped", 0) + (fanout or {}).get("connections_dropped", 0)
    out["ordinary_lost"] = lost if rpc is not None and fanout is not None else None
    if hostile is not None:
        out.update({
            "hostile_attempts": hostile.get("attempts"),
            "hostile_ended_by_gateway": hostile.get("ended_by_gateway"),
            "hostile_open_at_end": hostile.get("open_at_end"),
            "hostile_per_attack": {
                name: {"attempts": a["attempts"], "outcomes": {k: v["count"] for k, v in a["outcomes"].items()}}
                for name, a in hostile.get("per_attack", {}).items()
            },
        })
    out["errors"] = errors
    out["rss_samples"] = [[round(s[0] - window_start, 1), s[1]] for s in samples]
    out["fanout"] = fanout
    out["rpc"] = rpc
    out["hostile_result"] = hostile
    return out


def ratio(a, b):
    return None if a is None or not b else round(a / b, 3)


def compare(base, hostile):
    checks = {
        "rss_flat_within_10_percent": hostile.get("rss_drift_percent") is not None
        and abs(hostile["rss_drift_percent"]) <= RSS_FLAT_PERCENT
        and hostile["rss_max_percent"] <= RSS_FLAT_PERCENT,
        "rpc_p99_within_20_percent": (ratio(hostile.get("rpc_p99_ms"), base.get("rpc_p99_ms")) or 99) <= P99_WITHIN,
        "delivery_p99_within_20_percent": (ratio(hostile.get("delivery_p99_ms"), base.get("delivery_p99_ms")) or 99)
        <= P99_WITHIN,
        "nothing_ordinary_lost": hostile.get("ordinary_lost") == 0,
    }
    return {
        "bench": "soak-compare",
        "date": hostile.get("date"),
        "ordinary": hostile.get("ordinary"),
        "hostile": hostile.get("hostile"),
        "duration_secs": hostile.get("duration_secs"),
        "rpc_p50_ratio": ratio(hostile.get("rpc_p50_ms"), base.get("rpc_p50_ms")),
        "rpc_p99_ratio": ratio(hostile.get("rpc_p99_ms"), base.get("rpc_p99_ms")),
        "delivery_p50_ratio": ratio(hostile.get("delivery_p50_ms"), base.get("delivery_p50_ms")),
        "delivery_p99_ratio": ratio(hostile.get("delivery_p99_ms"), base.get("delivery_p99_ms")),
        "rss_drift_percent": hostile.get("rss_drift_percent"),
        "rss_max_percent": hostile.get("rss_max_percent"),
        "baseline_rss_drift_percent": base.get("rss_drift_percent"),
        "baseline_ordinary_lost": base.get("ordinary_lost"),
        "ordinary_lost": hostile.get("ordinary_lost"),
        "checks": checks,
        "accepted": all(checks.values()),
    }


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(lines):
    runs = [l for l in lines if l.get("bench") == "soak"]
    comps = [l for l in lines if l.get("bench") == "soak-compare"]
    out = []
    if runs:
        rows = [
            ("ordinary / hostile connections", lambda r: f"{fmt(r.get('ordinary'))} / {fmt(r.get('hostile'))}"),
            ("measured window, s", lambda r: fmt(r.get("window_secs"))),
            ("gateway RSS idle, KiB", lambda r: fmt(r.get("gateway_rss_idle_kib"))),
            ("RSS at steady start, KiB", lambda r: f"{fmt(r.get('rss_start_kib'))} (at {fmt(r.get('rss_start_at_s'))} s)"),
            ("RSS max, KiB", lambda r: f"{fmt(r.get('rss_max_kib'))} ({fmt(r.get('rss_max_percent'), 2)} %)"),
            ("RSS end, KiB", lambda r: f"{fmt(r.get('rss_end_kib'))} ({fmt(r.get('rss_drift_percent'), 2)} %)"),
            ("gateway CPU, % of a core", lambda r: fmt(r.get("gateway_cpu_percent"))),
            ("rpc round trips/s", lambda r: fmt(r.get("rpc_per_sec"))),
            ("rpc p50 / p99, ms", lambda r: f"{fmt(r.get('rpc_p50_ms'), 3)} / {fmt(r.get('rpc_p99_ms'), 3)}"),
            ("deliveries/s", lambda r: fmt(r.get("deliveries_per_sec"))),
            ("delivery p50 / p99, ms", lambda r: f"{fmt(r.get('delivery_p50_ms'), 3)} / {fmt(r.get('delivery_p99_ms'), 3)}"),
            ("ordinary lost (rpc failed, deliveries lost, gaps, opens failed, dropped)", lambda r: (
                f"{fmt(r.get('ordinary_lost'))} ({fmt(r.get('rpc_failed'))}, {fmt(r.get('delivery_lost'))}, "
                f"{fmt(r.get('delivery_gaps'))}, {fmt(r.get('ordinary_failed_opens'))}, {fmt(r.get('ordinary_dropped'))})")),
            ("hostile attempts (ended by the gateway / open at their end)", lambda r: (
                f"{fmt(r.get('hostile_attempts'))} ({fmt(r.get('hostile_ended_by_gateway'))} / "
                f"{fmt(r.get('hostile_open_at_end'))})" if r.get("hostile") else "–")),
        ]
        out.append("| | " + " | ".join(r.get("label", "?") for r in runs) + " |")
        out.append("|---|" + "---|" * len(runs))
        for name, get in rows:
            out.append(f"| {name} | " + " | ".join(get(r) for r in runs) + " |")
        for r in runs:
            if r.get("hostile_per_attack"):
                out.append("")
                out.append(f"Hostile attempts ({r.get('label')}):")
                out.append("")
                out.append("| attack | attempts | outcomes |")
                out.append("|---|---|---|")
                for name, a in r["hostile_per_attack"].items():
                    outcomes = ", ".join(f"{k}: {v:,}" for k, v in sorted(a["outcomes"].items(), key=lambda kv: -kv[1]))
                    out.append(f"| {name} | {a['attempts']:,} | {outcomes or '–'} |")
            for e in r.get("errors") or []:
                out.append(f"error ({r.get('label')}): {e}")
    for c in comps:
        out.append("")
        out.append("| hostile ÷ baseline | |")
        out.append("|---|---|")
        for key in ("rpc_p50_ratio", "rpc_p99_ratio", "delivery_p50_ratio", "delivery_p99_ratio"):
            out.append(f"| {key} | {fmt(c.get(key), 3)} |")
        for key, ok in c.get("checks", {}).items():
            out.append(f"| {key} | {fmt(ok)} |")
        out.append(f"| accepted | {fmt(c.get('accepted'))} |")
    return "\n".join(out)


def main(argv):
    if len(argv) >= 3 and argv[0] == "sample":
        sample(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "summary":
        print(json.dumps(summary(argv[1]), separators=(",", ":")))
    elif len(argv) == 3 and argv[0] == "compare":
        base, hostile = (read_json(p) for p in argv[1:])
        if base is None or hostile is None:
            sys.exit("compare: cannot read both summary lines")
        print(json.dumps(compare(base, hostile), separators=(",", ":")))
    elif argv and argv[0] == "table":
        src = open(argv[1]) if len(argv) > 1 else sys.stdin
        lines = []
        for raw in src:
            raw = raw.strip()
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass
        print(table(lines))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
