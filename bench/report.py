#!/usr/bin/env python3
"""Turn bench/run.sh's raw records (one JSON object per target and round)
into the markdown report: a summary table of medians, then every round's
raw numbers. Prints the report and writes it to --out.

Machine/tool metadata comes from M_* environment variables set by run.sh.
"""
import argparse
import json
import os
import statistics
import sys


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".1f", none="—"):
    return none if x is None else format(x, spec)


def fmt_rps(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def fmt_ms(x):
    if x is None:
        return "—"
    return f"{x:+.3f}" if x != 0 else "0"


NOISE_OTHER_PCT = 10.0
NOISE_STEAL_PCT = 5.0


def noise(r):
    if r.get("server_core_other_pct") is None:
        return "—"
    s = f"{r['server_core_other_pct']:.0f} / {r['server_core_steal_pct']:.0f}"
    if r.get("load_core_other_pct") is not None:
        s += f" · {r['load_core_other_pct']:.0f} / {r['load_core_steal_pct']:.0f}"
    return s


def noisy(r):
    return any(
        (r.get(k) or 0) > lim
        for k, lim in (
            ("server_core_other_pct", NOISE_OTHER_PCT),
            ("server_core_steal_pct", NOISE_STEAL_PCT),
            ("load_core_other_pct", NOISE_OTHER_PCT),
            ("load_core_steal_pct", NOISE_STEAL_PCT),
        )
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--load-cpu", type=int, required=True)
    ap.add_argument("--server-cpu", type=int, required=True)
    ap.add_argument("--targets", required=True)
    a = ap.parse_args()
    env = os.environ.get
    targets = a.targets.split()

    recs = [json.loads(line) for line in open(a.raw) if line.strip()]
    by = {(r["target"], r["round"]): r for r in recs}
    rounds = sorted({r["round"] for r in recs})

    def per_round(t, f, ref="nginx"):
        """f(rec_t, rec_direct, rec_ref) for each round where defined."""
        out = []
        for n in rounds:
            rt, rd, rn = by.get((t, n)), by.get(("direct", n)), by.get((ref, n))
            if rt is None:
                continue
            try:
                v = f(rt, rd, rn)
            except (TypeError, KeyError, ZeroDivisionError):
                v = None
            if v is not None:
                out.append(v)
        return out

    load_conns = a.conns * (3 if a.warmup > 0 else 2)
    upstream_desc = (
        "rgate-upstream --fixed-body-size 100 (single thread)"
        if a.upstream == "stub"
        else "nginx `return 200`, 100-byte JSON, one process"
    )

    L = []
    L.append(f"# rgate benchmark — {env('M_DATE', '')} on {env('M_HOST', '')}")
    L.append("")
    L.append(
        f"Loopback only. Load generator on CPU {a.load_cpu}; proxy and upstream "
        f"pinned together on CPU {a.server_cpu}; every proxy has one worker. "
        f"Upstream: {upstream_desc}. {a.rounds} interleaved round(s), order "
        f"rotated each round; medians of the rounds."
    )
    L.append(
        f"Max throughput: wrk, {a.conns} keep-alive connections, {a.duration} s "
        f"after a {a.warmup} s warm-up. Latency: oha at a fixed {a.rate} req/s "
        f"(open model, latency correction), {a.conns} connections, {a.duration} s; "
        f"*added* = target minus direct in the same round."
    )
    L.append("")
    L.append(
        f"- load average at start / end: {env('M_LOAD_START', '?')} / {env('M_LOAD_END', '?')}"
        f" ({env('M_NCPU', '?')} CPUs, {env('M_CPU', '?')}, kernel {env('M_KERNEL', '?')})"
    )
    L.append(
        f"- rgate {env('M_RGATE', '?')}; {env('M_NGINX', '?')}; {env('M_HAPROXY', '?')}; "
        f"{env('M_WRK', '?')}; {env('M_OHA', '?')}"
    )
    L.append("")

    hdr_lat = f"added p50 / p99 / p99.9 (ms) @ {a.rate} req/s"
    # nginx doing rgate's per-request header work, when measured: the like-for-like peer.
    fwd = "nginx-fwd" in targets
    L.append(
        f"| target | max req/s | ratio vs nginx |{' ratio vs nginx-fwd |' if fwd else ''} CPU µs/req "
        f"| CPU vs nginx | {hdr_lat} | peak RSS MiB | upstream conns opened (load opened {load_conns}) |"
    )
    L.append(f"|---|---:|---:|{'---:|' if fwd else ''}---:|---:|---:|---:|---:|")

    warnings = []
    for t in targets:
        rows = [by[(t, n)] for n in rounds if (t, n) in by]
        if not rows:
            continue
        rps = median([r["rps"] for r in rows])
        ratio = median(per_round(t, lambda rt, rd, rn: rt["rps"] / rn["rps"])) if "nginx" in targets else None
        fwd_ratio = (
            f" {fmt_ratio(median(per_round(t, lambda rt, rd, rn: rt['rps'] / rn['rps'], 'nginx-fwd')))} |"
            if fwd
            else ""
        )
        cpu = median([r.get("cpu_us_per_req") for r in rows])
        cpu_ratio = (
            median(per_round(t, lambda rt, rd, rn: rt["cpu_us_per_req"] / rn["cpu_us_per_req"]))
            if "nginx" in targets and t != "direct"
            else None
        )
        rss = median([r.get("rss_mib") for r in rows])
        conns = median([r["upstream_conns"] for r in rows])
        if t == "direct":
            lat = (
                "baseline "
                + " / ".join(fmt(median([r[k] for r in rows]), ".3f") for k in ("lat_p50_ms", "lat_p99_ms", "lat_p999_ms"))
                + " abs"
            )
        else:
            lat = " / ".join(
                fmt_ms(median(per_round(t, lambda rt, rd, rn, k=k: rt[k] - rd[k])))
                for k in ("lat_p50_ms", "lat_p99_ms", "lat_p999_ms")
            )
        L.append(
            f"| {t} | {fmt_rps(rps)} | {fmt_ratio(ratio)} |{fwd_ratio} {fmt(cpu)} | {fmt_ratio(cpu_ratio)} "
            f"| {lat} | {fmt(rss)} | {fmt(conns, '.0f')} |"
        )
        for r in rows:
            probs = []
            if r["non2xx"]:
                probs.append(f"{r['non2xx']} non-2xx responses (wrk)")
            if r["sock_err"]:
                probs.append(f"{r['sock_err']} socket errors (wrk)")
            if r["oha_bad"]:
                probs.append(f"{r['oha_bad']} non-2xx responses (oha)")
            if r["oha_errors"] > max(a.conns, 0.001 * (r["oha_ok"] or 0)):
                probs.append(f"{r['oha_errors']} request errors (oha)")
            if r.get("oha_rps") is not None and r["oha_rps"] < 0.95 * a.rate:
                probs.append(
                    f"oha reached only {r['oha_rps']:,.0f} of {a.rate} req/s: the "
                    f"latency figures are not at the nominal rate"
                )
            if noisy(r):
                probs.append(f"other work or steal on the CPUs (noise {noise(r)})")
            if probs:
                warnings.append(f"- round {r['round']} {t}: " + "; ".join(probs))
    L.append("")
    L.append(
        "Ratios are medians of per-round ratios (target ÷ nginx, or ÷ nginx-fwd, in the same round): "
        "for req/s higher is better, for CPU lower is better. CPU µs/req = proxy "
        "utime+stime over the measured wrk window ÷ requests completed in it."
    )

    # Marginal cost: the same traffic through rgate configs that differ in one
    # feature, against rgate-route1 (one plain route) in the same round.
    base = "rgate-route1"
    marginal = [t for t in targets if t.startswith("rgate-") and t != base]
    if base in targets and marginal:
        labels = {
            base: "1 route, no shaping (baseline)",
            "rgate-shaped": "same route + strip_prefix + 3 header rules + CORS",
            "rgate-limited": "same route + rate limit by client address (memory)",
            "rgate-routes50": "50 routes (half bound to hosts)",
            "rgate-routes500": "500 routes (half bound to hosts)",
            "rgate-auth-rs256": "same route + JWT auth, RS256 (warm token cache)",
            "rgate-auth-es256": "same route + JWT auth, ES256 (warm token cache)",
            "rgate-auth-rs256-cold": "same route + JWT auth, RS256, every request verified",
            "rgate-auth-es256-cold": "same route + JWT auth, ES256, every request verified",
            "rgate-redis": "same route + rate limit in Redis (one round trip)",
            "rgate-breaker": "same route + circuit breaker + outlier ejection",
            "rgate-chain": "full chain: shaping + CORS + auth ES256 + limit (memory) + breaker",
            "rgate-logged": "same route + access log (JSON lines to a file)",
            "rgate-stored": "same route + stats kept in SQLite (flushed every 1 s)",
            "rgate-observed": "same route + access log + stats in SQLite",
        }
        L.append("")
        L.append("### Marginal cost (rgate, same traffic, one config change)")
        L.append("")
        L.append(
            "| config | max req/s | ratio vs baseline (per-round spread) | CPU µs/req "
            "| CPU vs baseline | CPU in upstream units, vs baseline (spread) | added p50 / p99 / p99.9 (ms) |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for t in [base] + marginal:
            rps = per_round(t, lambda rt, rd, rn: rt["rps"] / rn["rps"], base)
            cpu = per_round(t, lambda rt, rd, rn: rt["cpu_us_per_req"] / rn["cpu_us_per_req"], base)
            spread = f" ({min(rps):.2f}–{max(rps):.2f})" if len(rps) > 1 else ""
            p50 = median(per_round(t, lambda rt, rd, rn: rt["lat_p50_ms"] - rd["lat_p50_ms"]))
            p99 = median(per_round(t, lambda rt, rd, rn: rt["lat_p99_ms"] - rd["lat_p99_ms"]))
            p999 = median(per_round(t, lambda rt, rd, rn: rt["lat_p999_ms"] - rd["lat_p999_ms"]))
            # The upstream does the same work per request and shares the
            # proxy's core in the same window: its CPU per request is a probe
            # of that core's speed, so the proxy's CPU in units of it cancels
            # clock and neighbour drift that a shared VM adds between runs.
            units = per_round(
                t,
                lambda rt, rd, rn: (rt["cpu_us_per_req"] / rt["upstream_cpu_us_per_req"])
                / (rn["cpu_us_per_req"] / rn["upstream_cpu_us_per_req"]),
                base,
            )
            uspread = f" ({min(units):.2f}–{max(units):.2f})" if len(units) > 1 else ""
            L.append(
                f"| {labels.get(t, t)} | {fmt_rps(median([by[(t, n)]['rps'] for n in rounds if (t, n) in by]))} "
                f"| {fmt_ratio(median(rps))}{spread} "
                f"| {fmt(median([by[(t, n)].get('cpu_us_per_req') for n in rounds if (t, n) in by]))} "
                f"| {fmt_ratio(median(cpu))} | {fmt_ratio(median(units))}{uspread} "
                f"| {fmt_ms(p50)} / {fmt_ms(p99)} / {fmt_ms(p999)} |"
            )
        L.append("")
        L.append(
            "Traffic: GET /api/svc0007/items with an Origin header, for every row, and a "
            "bearer token on the auth and chain rows (bench/jwt.py); configs from "
            "bench/routes.py; added latency is against direct at the fixed rate. The Redis "
            "row's redis-server shares the proxy's core, so its CPU is in the row's req/s. "
            "*CPU in upstream units*: the proxy's CPU "
            "per request ÷ the upstream's in the same window (they share one core), "
            "as a ratio to the baseline's in the same round; it cancels the core's "
            "speed drifting between runs, which on a shared VM moves every absolute "
            "number by tens of percent."
        )
    if warnings:
        L.append("")
        L.append("**Warnings** (these rounds' numbers are suspect):")
        L.append("")
        L.extend(warnings)

    L.append("")
    L.append("## Raw numbers per round")
    L.append("")
    L.append(
        "| round | target | req/s | requests | CPU µs/req | upstream CPU µs/req | p50 ms | p99 ms "
        "| p99.9 ms | oha req/s | peak RSS MiB | upstream conns | errors | noise % (server core · load core) |"
    )
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in rounds:
        for t in targets:
            r = by.get((t, n))
            if r is None:
                continue
            errs = r["non2xx"] + r["sock_err"] + r["oha_bad"] + r["oha_errors"]
            L.append(
                f"| {n} | {t} | {fmt_rps(r['rps'])} | {r['requests']:,} | {fmt(r.get('cpu_us_per_req'))} "
                f"| {fmt(r['upstream_cpu_us_per_req'])} | {fmt(r['lat_p50_ms'], '.3f')} "
                f"| {fmt(r['lat_p99_ms'], '.3f')} | {fmt(r['lat_p999_ms'], '.3f')} "
                f"| {fmt_rps(r.get('oha_rps'))} | {fmt(r.get('rss_mib'))} | {r['upstream_conns']} | {errs} "
                f"| {noise(r)} |"
            )
    L.append("")
    L.append(
        f"Noise, as other / steal % of each core during the wrk window: *other* is CPU "
        f"used by anything but the proxy and upstream (server core, CPU {a.server_cpu}) or "
        f"but the load generator (load core, CPU {a.load_cpu}), including some kernel "
        f"network work; *steal* is time the hypervisor gave to other guests. A quiet "
        f"machine shows a few % at most; rounds above {NOISE_OTHER_PCT:.0f}% other or "
        f"{NOISE_STEAL_PCT:.0f}% steal are listed under Warnings. Noise elsewhere on the "
        f"host (shared caches, CPU frequency) does not show here."
    )
    L.append("")
    text = "\n".join(L)
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
