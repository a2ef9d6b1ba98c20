#!/usr/bin/env python3
"""Prints Markdown tables (with ratios) from rainbow-bench JSON result lines.

    python3 bench/table.py results.jsonl [more.jsonl ...]   (or JSON lines on stdin)

Lines of every bench (fanout, rpc, connect, churn, idle) may be mixed; each
kind gets its own table. Ratios compare Rainbow with each peer measured in
the same files: "x" = Rainbow's figure divided by the peer's.
"""

import json
import sys


def load(paths):
    lines = []
    sources = [open(p) for p in paths] if paths else [sys.stdin]
    for src in sources:
        for raw in src:
            raw = raw.strip()
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass
    return lines


def num(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


def fanout(rows):
    """One table set per round (rows tagged "round" by bench/fanout.sh)."""
    rounds = sorted({r.get("round", 1) for r in rows})
    out = []
    for rnd in rounds:
        these = [r for r in rows if r.get("round", 1) == rnd]
        if len(rounds) > 1:
            out += [f"#### Round {rnd}", ""]
        out += fanout_round(these)
        out.append("")
    return out


def fanout_round(rows):
    def mode(r):
        return r.get("mode", "saturation" if r.get("find_saturation") else "fixed")
    sat = {r.get("target"): r for r in rows if mode(r) == "saturation"}
    fixed = {r.get("target"): r for r in rows if mode(r) == "fixed"}
    out = []
    if sat:
        out += ["### Fan-out: saturation (deliveries/s; Rainbow ÷ peer)", "",
                "| server | subscribers | saturation deliveries/s | highest offered without lag | Rainbow ÷ this | steps | lost | server CPU s | bench CPU s |",
                "|---|---|---|---|---|---|---|---|---|"]
    rb = sat.get("rainbow", {}).get("saturation_deliveries_per_sec")
    for t, r in sat.items():
        if "error" in r:
            out.append(f"| {t} | – | {r['error']} | | | | | | |")
            continue
        s = r.get("saturation_deliveries_per_sec")
        out.append(
            f"| {t} | {num(r.get('connections_ok'))} | {num(s)} | {num(r.get('max_sustained_offered_deliveries_per_sec'))} "
            f"| {ratio(rb, s) if t != 'rainbow' else '1.00×'} | {len(r.get('steps', []))} | {num(r.get('lost'))} "
            f"| {num(r.get('server_cpu_seconds'), 2)} | {num(r.get('bench_cpu_seconds'), 2)} |")
    if sat:
        out += ["", "Saturation steps (offered → achieved deliveries/s, p99 ms, server / bench / other CPU s, lag):", ""]
    for t, r in sat.items():
        steps = r.get("steps", [])
        if steps:
            def cpu(s):
                srv, bench, machine = s.get("server_cpu_seconds"), s.get("bench_cpu_seconds"), s.get("machine_cpu_seconds")
                if srv is None or machine is None:
                    return ""
                return f", CPU {srv:.1f} / {bench:.1f} / {machine - srv - bench:.1f}"
            cells = ", ".join(
                f"{num(s['offered_deliveries_per_sec'])}→{num(s['achieved_deliveries_per_sec'])} (p99 {s['latency']['p99_ms']}{cpu(s)}{', LAG' if s['lagging'] else ''})"
                for s in steps)
            out.append(f"- {t}: {cells}")
    if not fixed:
        return out
    out += ["", "### Fan-out: fixed offered rate (publish-to-receipt latency, ms; peer ÷ Rainbow for p99)", "",
            "| server | subscribers | offered deliveries/s | achieved | p50 | p99 | max | lost | this p99 ÷ Rainbow p99 | server CPU s | bench CPU s | other CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rb99 = fixed.get("rainbow", {}).get("latency_p99_ms")
    for t, r in fixed.items():
        if "error" in r:
            out.append(f"| {t} | – | {r['error']} | | | | | | | | | |")
            continue
        p99 = r.get("latency_p99_ms")
        st = (r.get("steps") or [{}])[0]
        other = None
        if st.get("machine_cpu_seconds") is not None and st.get("server_cpu_seconds") is not None:
            other = st["machine_cpu_seconds"] - st["server_cpu_seconds"] - st["bench_cpu_seconds"]
        out.append(
            f"| {t} | {num(r.get('connections_ok'))} | {num(r.get('offered_deliveries_per_sec'))} | {num(r.get('achieved_deliveries_per_sec'))} "
            f"| {num(r.get('latency_p50_ms'), 3)} | {num(p99, 3)} | {num(r.get('latency_max_ms'), 3)} | {num(r.get('lost'))} "
            f"| {ratio(p99, rb99) if t != 'rainbow' else '1.00×'} | {num(st.get('server_cpu_seconds'), 2)} | {num(st.get('bench_cpu_seconds'), 2)} "
            f"| {num(other, 2)} |")
    return out


def rpc(rows):
    out = ["### Rpc: qos-1 round trips through the gateway vs straight to the backend", "",
           "| run | clients × window | path | round trips/s | p50 µs | p99 µs | failed | gateway CPU s | backend CPU s | bench CPU s | other CPU s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        for path in ("gateway", "direct"):
            leg = r.get(path)
            if leg:
                other = None
                if leg.get("machine_cpu_seconds") is not None:
                    other = leg["machine_cpu_seconds"] - sum(leg.get(k) or 0 for k in ("gateway_cpu_seconds", "backend_cpu_seconds", "bench_cpu_seconds"))
                label = "floor" if path == "gateway" and r.get("server") == "floor" else path
                out.append(
                    f"| {i} | {r['clients']} × {r['window']} | {label} | {num(leg['round_trips_per_sec'])} | {num(leg['p50_us'])} "
                    f"| {num(leg['p99_us'])} | {num(leg['failed'])} | {num(leg.get('gateway_cpu_seconds'), 2)} "
                    f"| {num(leg.get('backend_cpu_seconds'), 2)} | {num(leg.get('bench_cpu_seconds'), 2)} | {num(other, 2)} |")
        vs = "floor vs direct" if r.get("server") == "floor" else "gateway vs direct"
        out.append(f"| {i} | | **{vs}** | **{num((r.get('throughput_ratio') or 0) * 100, 1)} % of direct** "
                   f"| **{r.get('overhead_p50_us') or 0:+,.0f} µs** | | | | | | |")
    return out


def connect(rows):
    """Median and range per target over its runs (bench/connect.sh repeats them)."""
    by = {}
    for r in rows:
        by.setdefault(r.get("target", "rainbow"), []).append(r)
    out = ["### Handshakes (median of the runs; range)", "",
           "| server | runs | connections per run | failed | handshakes/s median | range | Rainbow ÷ this | p50 ms (median) | p99 ms (median) | bench processes |",
           "|---|---|---|---|---|---|---|---|---|---|"]

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return None if n == 0 else (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)

    med = {t: median([r["handshakes_per_sec"] for r in rs if "handshakes_per_sec" in r]) for t, rs in by.items()}
    rb = med.get("rainbow")
    for t, rs in by.items():
        ok = [r for r in rs if "handshakes_per_sec" in r]
        errors = [r["error"] for r in rs if "error" in r]
        if not ok:
            out.append(f"| {t} | {len(rs)} | {'; '.join(errors)} | | | | | | | |")
            continue
        hs = [r["handshakes_per_sec"] for r in ok]
        out.append(
            f"| {t} | {len(ok)}{' (+' + str(len(errors)) + ' failed to run)' if errors else ''} | {num(ok[0].get('connections'))} "
            f"| {num(sum(r.get('connections_failed', 0) for r in ok))} | {num(med[t])} | {num(min(hs))}–{num(max(hs))} "
            f"| {ratio(rb, med[t]) if t != 'rainbow' else '1.00×'} | {num(median([r['latency_p50_ms'] for r in ok]), 3)} "
            f"| {num(median([r['latency_p99_ms'] for r in ok]), 3)} | {num(ok[0].get('processes'))} |")
    return out


def churn(rows):
    out = ["### Churn", "",
           "| connections | reopenings/s | seconds | RSS at baseline (KiB) | RSS at end (KiB) | end ÷ baseline | handshake failures | reopened |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {num(r['connections_ok'])} | {num(r['churn_per_sec'])} | {num(r['duration_secs'])} | {num(r['rss_baseline_kib'])} (at {r['baseline_at']} s) "
            f"| {num(r['rss_end_kib'])} | {r['rss_end_over_baseline']:.3f} | {num(r['handshake_failures'])} | {num(r['reopened'])} |")
    return out


def main():
    lines = load(sys.argv[1:])
    by = {}
    for line in lines:
        by.setdefault(line.get("bench"), []).append(line)
    out = []
    for kind, fn in (("fanout", fanout), ("rpc", rpc), ("connect", connect), ("churn", churn)):
        if by.get(kind):
            out += fn(by[kind]) + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
