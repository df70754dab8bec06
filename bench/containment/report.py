#!/usr/bin/env python3
"""Report of bench/containment.sh: reads its manifest and oha outputs, writes markdown.

Per scenario and round the script leaves TAG-a.json / TAG-b.json (oha's JSON
summary) and TAG-a.db / TAG-b.db (oha's per-request records, sqlite: only
requests that got an HTTP answer). The manifest has one JSON line per
scenario and round (load average, requests each stub saw, rgate CPU ticks).
"""
import argparse
import json
import math
import os
import sqlite3
import sys

DEADLINE = "aborted due to deadline"
FAST_MS = 50.0      # A's upstream answers take >= 200 ms; anything under this came from rgate itself
BUCKET_S = 0.25     # onset table resolution
ONSET_S = 3.0       # onset table length


def rgate_body_len(code, backend="a"):
    # rgate's error body: serde_json of {"error": code, "backend": name}, compact.
    return len(json.dumps({"error": code, "backend": backend}, separators=(",", ":")))


def stub_body_len(name):
    # rgate-upstream's injected error body: {"error":"injected","name":NAME}.
    return len(json.dumps({"error": "injected", "name": name}, separators=(",", ":")))


LEN_KIND = {
    stub_body_len("a1"): "503 from A (injected)",
    rgate_body_len("endpoints_unavailable"): "503 endpoints_unavailable (breaker/ejection)",
    rgate_body_len("backend_saturated"): "503 backend_saturated (bulkhead)",
}
KINDS_503 = list(LEN_KIND.values()) + ["503 other"]


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, math.ceil(q / 100.0 * len(v)) - 1))   # nearest rank
    return v[k]


def load_oha(base):
    """Summary of one oha run: JSON summary plus per-request rows (t, ms, status, len)."""
    with open(base + ".json") as f:
        d = json.load(f)
    status = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = dict(d.get("errorDistribution") or {})
    deadline = errors.pop(DEADLINE, 0)
    answers = sum(status.values())
    client_err = sum(errors.values())
    sent = answers + client_err                      # requests with an outcome, deadline aborts left out
    ok = sum(v for k, v in status.items() if 200 <= k < 300)
    s503 = status.get(503, 0)
    other_status = answers - ok - s503
    lp = d.get("latencyPercentiles") or {}
    total_s = d["summary"]["total"]
    rows = []
    if os.path.exists(base + ".db"):
        con = sqlite3.connect(base + ".db")
        rows = con.execute(
            "SELECT COALESCE(start_latency_correction, start), duration * 1000.0, status, len_bytes "
            "FROM oha ORDER BY 1").fetchall()
        con.close()
    return {
        "answers": answers, "sent": sent, "ok": ok, "s503": s503,
        "other_status": other_status, "client_err": client_err, "errors": errors,
        "deadline": deadline, "total_s": total_s,
        "rps": answers / total_s if total_s else 0.0,
        "sent_rps": sent / total_s if total_s else 0.0,
        "ok_pct": 100.0 * ok / sent if sent else float("nan"),
        "s503_pct": 100.0 * s503 / sent if sent else float("nan"),
        "other": other_status + client_err,
        "other_pct": 100.0 * (other_status + client_err) / sent if sent else float("nan"),
        "err_pct": 100.0 * (sent - ok) / sent if sent else float("nan"),
        "p50": lp.get("p50", float("nan")) * 1000.0,
        "p99": lp.get("p99", float("nan")) * 1000.0,
        "p999": lp.get("p99.9", float("nan")) * 1000.0,
        "rows": rows,
    }


def kind_of(status, length):
    if status == 503:
        return LEN_KIND.get(length, "503 other")
    if 200 <= status < 300:
        return "2xx"
    return "other"


def breakdown(rows):
    out = {k: 0 for k in ["2xx"] + KINDS_503 + ["other"]}
    for _, _, st, ln in rows:
        out[kind_of(st, ln)] += 1
    return out


def buckets(rows, width, end):
    """[(t0, rows)] by scheduled send time, from 0 to end in steps of width."""
    n = int(round(end / width))
    b = [[] for _ in range(n)]
    for r in rows:
        i = int(r[0] // width)
        if 0 <= i < n:
            b[i].append(r)
    return [(i * width, b[i]) for i in range(n)]


def timeline_table(rows, width, end):
    lines = ["| t (s) | answers | 2xx | 503 from A | 503 breaker/ejection | 503 bulkhead | other | fast (<50 ms) | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t0, rs in buckets(rows, width, end):
        bd = breakdown(rs)
        ms = [r[1] for r in rs]
        fast = sum(1 for m in ms if m < FAST_MS)
        lines.append(
            f"| {t0:.2f}–{t0 + width:.2f} | {len(rs)} | {bd['2xx']} | {bd[KINDS_503[0]]} | {bd[KINDS_503[1]]} "
            f"| {bd[KINDS_503[2]]} | {bd['503 other'] + bd['other']} | "
            f"{(100.0 * fast / len(rs)) if rs else 0:.0f}% | {pct(ms, 50):.1f} | {pct(ms, 99):.1f} |")
    return lines


def onset(rows):
    """Times (s, by scheduled send) of the first fast rgate 503s, and of A's p50 turning fast."""
    first = {}
    for t, _, st, ln in rows:
        k = kind_of(st, ln)
        if k not in first:
            first[k] = t
    fast_bucket = None
    for t0, rs in buckets(rows, BUCKET_S, max((r[0] for r in rows), default=0) + BUCKET_S):
        if rs and pct([r[1] for r in rs], 50) < FAST_MS:
            fast_bucket = t0
            break
    return first, fast_bucket


def fmt(v, nd=1):
    if v != v:  # nan
        return "—"
    return f"{v:,.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    for a in ("--manifest", "--out"):
        ap.add_argument(a, required=True)
    for a in ("--rounds", "--duration", "--warmup", "--rate-a", "--rate-b", "--conns-a", "--conns-b",
              "--workers", "--clk-tck"):
        ap.add_argument(a, type=int, required=True)
    ap.add_argument("--max-load", type=float, default=1.0)
    args = ap.parse_args()

    recs = [json.loads(line) for line in open(args.manifest) if line.strip()]
    res = []   # (rec, backend, data)
    for rec in recs:
        for be in ("a", "b"):
            base = f"{rec['tag']}-{be}"
            if os.path.exists(base + ".json"):
                res.append((rec, be, load_oha(base)))

    env = os.environ.get
    out = []
    w = out.append
    w("## Containment: a failing backend next to a healthy one")
    w("")
    w(f"- date: {env('M_DATE', '?')}; host `{env('M_HOST', '?')}`, kernel {env('M_KERNEL', '?')}, "
      f"{env('M_NCPU', '?')} × {env('M_CPU', '?')}")
    w(f"- rgate {env('M_RGATE', '?')}, `--workers {args.workers}`; {env('M_OHA', 'oha')}")
    w(f"- load average (1/5/15 min): start {env('M_LOAD_START', '?')}, end {env('M_LOAD_END', '?')}; "
      "per scenario below")
    w(f"- backend A = 3 × `rgate-upstream --latency-ms 200 --error-rate 0.3 --threads 1`; "
      f"backend B = 3 × `rgate-upstream --threads 1`")
    w(f"- load, at the same time, {args.duration} s each: `oha -q {args.rate_a} -c {args.conns_a} "
      f"--latency-correction` on /a and `oha -q {args.rate_b} -c {args.conns_b} --latency-correction` on /b "
      f"(keep-alive, loopback, nothing pinned); {args.warmup} s warm-up on /b before each scenario, not recorded")
    w("- off = `bench/containment/off.yml` (no protection); on = `bench/containment/on.yml` "
      "(A: `max_in_flight: 32`, breaker 0.25/20/5s/2s/3, outlier 5/5s/50%)")
    w("")

    # ---------------------------------------------------------- headline --
    by = {(rec["round"], rec["scenario"], be): d for rec, be, d in res}
    rounds = sorted({rec["round"] for rec in recs})
    have_off_on = any((r, "off", "b") in by and (r, "on", "b") in by for r in rounds)
    if have_off_on:
        w("### Headline: backend B while A fails")
        w("")
        alone = any((r, "alone", "b") in by for r in rounds)
        w("| round | B p99 off → on (ms) | B p99.9 off → on (ms) | B errors off → on | A 2xx off → on | A p50 off → on (ms) | A requests reaching A's servers off → on |"
          + (" B alone p99 / p99.9 (ms) |" if alone else ""))
        w("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if alone else ""))
        for r in rounds:
            if not ((r, "off", "b") in by and (r, "on", "b") in by):
                continue
            bo, bn = by[(r, "off", "b")], by[(r, "on", "b")]
            ao, an = by.get((r, "off", "a")), by.get((r, "on", "a"))
            reach = {}
            for rec in recs:
                if rec["round"] == r:
                    reach[rec["scenario"]] = sum(v for k, v in rec["stub_requests"].items() if k.startswith("a"))
            a_cols = ("—", "—", "—")
            if ao and an:
                a_cols = (f"{fmt(ao['ok_pct'])}% → {fmt(an['ok_pct'])}%",
                          f"{fmt(ao['p50'])} → {fmt(an['p50'], 2)}",
                          f"{reach.get('off', 0):,} → {reach.get('on', 0):,}")
            w(f"| {r} | {fmt(bo['p99'], 2)} → {fmt(bn['p99'], 2)} | {fmt(bo['p999'], 2)} → {fmt(bn['p999'], 2)} "
              f"| {fmt(bo['err_pct'], 2)}% → {fmt(bn['err_pct'], 2)}% | {a_cols[0]} | {a_cols[1]} | {a_cols[2]} |"
              + ((f" {fmt(by[(r, 'alone', 'b')]['p99'], 2)} / {fmt(by[(r, 'alone', 'b')]['p999'], 2)} |"
                  if (r, "alone", "b") in by else " — |") if alone else ""))
        w("")

    # --------------------------------------------------------- full table --
    w("### Every scenario")
    w("")
    w("Shares are of requests with an outcome (answers + client-side errors; requests oha cut off at "
      "its deadline are left out). Latency is oha's, latency-corrected, over all answers (503s included). \"reached servers\" counts "
      "the requests the backend's three stubs saw. \"load avg\" is read at each scenario's start and "
      "includes the load of the scenario before it. \"CPU bench / other\" is the share of both "
      "cores' time, during the measured run, used by this benchmark's processes (rgate, stubs, oha) and by "
      "anything else; a large \"other\" means another program competed for the CPUs.")
    w("")
    w("| round | scenario | backend | target req/s | answers/s | 2xx | 503 | other errors | p50 ms | p99 ms | p99.9 ms | reached servers | load avg | CPU bench / other |")
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for rec, be, d in sorted(res, key=lambda x: (x[0]["round"], x[0]["tag"], x[1])):
        target = args.rate_a if be == "a" else args.rate_b
        reached = sum(v for k, v in rec["stub_requests"].items() if k.startswith(be))
        w(f"| {rec['round']} | {rec['scenario']} | {be.upper()} | {target:,} | {fmt(d['rps'], 0)} "
          f"| {fmt(d['ok_pct'], 2)}% | {fmt(d['s503_pct'], 2)}% | {d['other']} ({fmt(d['other_pct'], 2)}%) "
          f"| {fmt(d['p50'], 2)} | {fmt(d['p99'], 2)} | {fmt(d['p999'], 2)} | {reached:,} | {rec['loadavg']} "
          f"| {rec.get('bench_cpu_pct', float('nan')):.0f}% / {rec.get('other_cpu_pct', float('nan')):.0f}% |")
    w("")

    # ---------------------------------------------------- A's 503 kinds --
    w("### What A's answers were")
    w("")
    w("Classified by body length: the stub's `{\"error\":\"injected\",…}`, rgate's "
      "`endpoints_unavailable` (every endpoint ejected or behind an open breaker) and "
      "`backend_saturated` (bulkhead full) differ in length.")
    w("")
    w("| round | scenario | answers | 2xx | " + " | ".join(KINDS_503) + " | other | fast (<50 ms) | rgate CPU s |")
    w("|---|---|---:|---:|" + "---:|" * len(KINDS_503) + "---:|---:|---:|")
    for rec, be, d in sorted(res, key=lambda x: (x[0]["round"], x[0]["tag"])):
        if be != "a":
            continue
        bd = breakdown(d["rows"])
        n = len(d["rows"]) or 1
        fast = sum(1 for r in d["rows"] if r[1] < FAST_MS)
        cells = " | ".join(f"{bd[k]:,} ({100.0 * bd[k] / n:.1f}%)" for k in ["2xx"] + KINDS_503 + ["other"])
        w(f"| {rec['round']} | {rec['scenario']} | {len(d['rows']):,} | {cells} | {100.0 * fast / n:.1f}% "
          f"| {rec['rgate_cpu_ticks'] / args.clk_tck:.2f} |")
    w("")

    # ------------------------------------------------------- A's onset --
    on_a = [(rec, d) for rec, be, d in res if be == "a" and rec["scenario"] == "on"]
    if on_a:
        w("### How fast A's answers turn into fast 503s (scenario on)")
        w("")
        w("Times are by each request's scheduled send time from the start of the run. "
          "\"Fast\" means answered in under 50 ms: A's own answers take at least 200 ms, so a fast answer "
          "is rgate refusing at once.")
        w("")
        for rec, d in on_a:
            first, fast_bucket = onset(d["rows"])
            def at(k):
                return f"{first[k]:.2f} s" if k in first else "never"
            w(f"- round {rec['round']}: first bulkhead 503 at {at(KINDS_503[2])}, first breaker/ejection 503 at "
              f"{at(KINDS_503[1])}; A's p50 is under 50 ms from the "
              + (f"{fast_bucket:.2f}–{fast_bucket + BUCKET_S:.2f} s bucket on" if fast_bucket is not None
                 else "… never, in this run")
              + f"; over the whole run A's p50 is {fmt(d['p50'], 2)} ms, {fmt(d['ok_pct'])}% 2xx.")
        w("")
        for rec, d in on_a:
            w(f"<details><summary>round {rec['round']}: A's answers over time</summary>")
            w("")
            w(f"First {ONSET_S:.0f} s in {int(BUCKET_S * 1000)} ms steps:")
            w("")
            out.extend(timeline_table(d["rows"], BUCKET_S, ONSET_S))
            w("")
            w("Whole run, per second:")
            w("")
            out.extend(timeline_table(d["rows"], 1.0, float(args.duration)))
            w("")
            w("</details>")
            w("")

    # ------------------------------------------------------ B per second --
    w("### B's worst second")
    w("")
    w("| round | scenario | worst 1 s p99 ms (at t) | worst 1 s p99.9 ms | seconds with a non-2xx |")
    w("|---|---|---:|---:|---:|")
    for rec, be, d in sorted(res, key=lambda x: (x[0]["round"], x[0]["tag"])):
        if be != "b":
            continue
        worst = (float("-inf"), 0.0)
        worst999 = float("-inf")
        bad = 0
        for t0, rs in buckets(d["rows"], 1.0, float(args.duration)):
            if not rs:
                continue
            ms = [r[1] for r in rs]
            worst = max(worst, (pct(ms, 99), t0))
            worst999 = max(worst999, pct(ms, 99.9))
            bad += any(not (200 <= r[2] < 300) for r in rs)
        w(f"| {rec['round']} | {rec['scenario']} | {fmt(worst[0], 2)} (at {worst[1]:.0f} s) | {fmt(worst999, 2)} | {bad} |")
    w("")

    # ---------------------------------------------------------- warnings --
    warn = []
    for rec, be, d in res:
        label = f"round {rec['round']} {rec['scenario']} {be.upper()}"
        target = args.rate_a if be == "a" else args.rate_b
        if d["sent_rps"] < 0.95 * target:
            warn.append(f"{label}: oha reached {d['sent_rps']:.0f} req/s, below 95% of {target}")
        if d["errors"]:
            warn.append(f"{label}: client-side errors {d['errors']}")
    for rec in recs:
        if rec.get("other_cpu_pct", 0.0) > 10.0:
            warn.append(f"round {rec['round']} {rec['scenario']}: other programs used "
                        f"{rec['other_cpu_pct']:.0f}% of the CPUs during the run: suspect")
    try:
        start_load = os.environ.get("M_LOAD_START", "")
        if float(start_load.split()[0]) >= args.max_load:
            warn.append(f"load average {start_load} before the first scenario (>= {args.max_load}): "
                        "something else was running")
    except (ValueError, IndexError):
        pass
    if warn:
        w("### Warnings")
        w("")
        for x in sorted(set(warn)):
            w(f"- {x}")
        w("")

    w("### Raw")
    w("")
    w("```")
    for rec, be, d in res:
        w(json.dumps({"round": rec["round"], "scenario": rec["scenario"], "backend": be,
                      "answers": d["answers"], "ok": d["ok"], "503": d["s503"],
                      "other_status": d["other_status"], "client_errors": d["errors"],
                      "deadline_aborts": d["deadline"], "run_s": round(d["total_s"], 3),
                      "p50_ms": round(d["p50"], 3), "p99_ms": round(d["p99"], 3),
                      "p999_ms": round(d["p999"], 3), "stub_requests": rec["stub_requests"],
                      "rgate_cpu_s": rec["rgate_cpu_ticks"] / args.clk_tck, "loadavg": rec["loadavg"]}))
    w("```")

    text = "\n".join(out) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
