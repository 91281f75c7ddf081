"""Turns what the soak recorded into its verdict, a JSON document and a
markdown summary. Pure: everything comes in as plain data.
"""
from . import expect

MAX_DETAILS = 40


def judge_requests(records, events, timeouts):
    """Classifies every checker record. -> summary dict (with failures)."""
    by_verdict, by_kind, fails = {}, {}, []
    for rec in records:
        verdict, why = expect.classify(rec, events, timeouts)
        by_verdict[verdict] = by_verdict.get(verdict, 0) + 1
        k = by_kind.setdefault(rec["kind"], {})
        k[verdict] = k.get(verdict, 0) + 1
        if verdict == "fail":
            fails.append({"id": rec["id"], "t0": rec["t0"], "t1": rec["t1"], "why": why,
                          "request": expect.describe(rec)})
    return {"total": len(records), "by_verdict": by_verdict, "by_kind": by_kind,
            "failures": len(fails), "failure_details": fails[:MAX_DETAILS]}


def judge_hostile(records, timeouts):
    by_kind, fails = {}, []
    for rec in records:
        verdict, why = expect.classify_hostile(rec, timeouts)
        k = by_kind.setdefault(rec["kind"], {"count": 0, "fail": 0, "answers": {}})
        k["count"] += 1
        if verdict == "fail":
            k["fail"] += 1
            fails.append({"kind": rec["kind"], "t0": rec["t0"], "why": why,
                          "record": {x: rec.get(x) for x in ("closed", "closed_after", "status", "code",
                                                               "drained", "detail")}})
        ans = f"{rec.get('status')} {rec.get('code')}" if rec.get("status") else "closed without answer"
        k["answers"][ans] = k["answers"].get(ans, 0) + 1
        if rec.get("closed_after") is not None:
            k["max_closed_after_s"] = max(k.get("max_closed_after_s", 0), rec["closed_after"])
    # A hostile client's own errors (it could not connect) are not the
    # gateway's failure, but are shown: many of them mean the soak was unfair.
    return {"total": len(records), "by_kind": by_kind, "failures": len(fails),
            "failure_details": fails[:MAX_DETAILS]}


def judge_pcl(segments, events):
    streams, fails = {}, []
    for seg in segments:
        verdict, why = expect.classify_pcl(seg, events)
        s = streams.setdefault(seg["stream"], {"segments": 0, "requests": 0, "errors": 0, "refused_segments": 0,
                                               "failed_segments": 0})
        j = seg.get("json") or {}
        s["segments"] += 1
        s["requests"] += j.get("requests", 0) + j.get("requests_in_grace", 0)
        s["errors"] += j.get("errors_total", 0)
        s["refused_segments"] += verdict == "refused"
        if verdict == "fail":
            s["failed_segments"] += 1
            fails.append({"stream": seg["stream"], "segment": seg["n"], "why": why})
    return {"streams": streams, "failures": len(fails), "failure_details": fails[:MAX_DETAILS]}


def verdict(result):
    """The list of reasons the run failed (empty: it passed)."""
    why = list(result.get("setup_failures", []))
    r = result["requests"]
    if r["failures"]:
        why.append(f"{r['failures']} well-behaved requests failed")
    if r["total"] == 0:
        why.append("no well-behaved request was made")
    if result["pcl_load"]["failures"]:
        why.append(f"{result['pcl_load']['failures']} pcl-load segments failed")
    if result["hostile"]["failures"]:
        why.append(f"{result['hostile']['failures']} hostile clients were not bounded as configured")
    f = result["flatness"]
    if not f.get("flat"):
        if "fds" in f:
            for m in ("fds", "rss"):
                for k in ("level_ok", "slope_ok"):
                    if not f[m][k]:
                        why.append(f"{m} not flat ({k.replace('_ok', '')})")
        else:
            why.append(f.get("why", "flatness not judged"))
    if not result["quiet"]["ok"]:
        why.append("after the load: connections still open or fds above the start")
    g = result["gateway"]
    if g.get("panics"):
        why.append(f"the gateway log has {g['panics']} panic lines")
    if g.get("died_during_run"):
        why.append("the gateway exited during the run")
    if g.get("exit_code") not in (0, None):
        why.append(f"the gateway exited with status {g['exit_code']} at shutdown")
    return why


def _mib(kib):
    return f"{kib / 1024:.1f} MiB"


def markdown(res, svg_name):
    p, f, q = res["params"], res["flatness"], res["quiet"]
    out = [f"# Soak {res['timestamp']}: {res['verdict']}", ""]
    out.append(f"`{res['command_line']}` on commit `{res['commit']}`{' (dirty tree)' if res['dirty'] else ''}; "
               f"{res['machine']}. {p['minutes']} min, seed {p['seed']}, driver {p['driver']}, warm-up "
               f"{p['warmup_s']:.0f} s; gateway: 1 worker{' pinned to core ' + str(p['gateway_cpu']) if p['gateway_cpu'] is not None else ''}, "
               f"everything else{' on core ' + str(p['others_cpu']) if p['others_cpu'] is not None else ''}.")
    out.append("")
    if res["failures"]:
        out.append("**Failed:** " + "; ".join(res["failures"]) + ".")
    else:
        out.append("**Passed:** every well-behaved request answered correctly or with the coded error of a "
                   "fault it overlapped, every hostile client bounded, fds and RSS flat.")
    out += ["", f"![fds and RSS over time]({svg_name})", "", "## Flat after warm-up", ""]
    if "fds" in f:
        fd, rss = f["fds"], f["rss"]
        out += [
            "Samples every second; 30 s windows after the warm-up (fds: the window's minimum, RSS: its median); "
            "baseline = first minute after the warm-up.", "",
            "| metric | baseline | max in last 80 % | allowed | slope / min | slope limit | |",
            "|---|---:|---:|---:|---:|---:|---|",
            f"| open fds (window floor) | {fd['baseline_floor']} | {fd['last80_max_floor']} | "
            f"+{fd['allow']} | {fd['slope_per_min']:+.2f} | {fd['slope_limit_per_min']} | "
            f"{'ok' if fd['level_ok'] and fd['slope_ok'] else 'FAIL'} |",
            f"| RSS (window median) | {_mib(rss['baseline_kib'])} | {_mib(rss['last80_max_median_kib'])} | "
            f"+{_mib(rss['allow_kib'])} | {rss['slope_kib_per_min']:+.1f} KiB | {rss['slope_limit_kib_per_min']:.0f} KiB | "
            f"{'ok' if rss['level_ok'] and rss['slope_ok'] else 'FAIL'} |",
        ]
    else:
        out.append(f"Not judged: {f.get('why')}")
    out += ["", f"After the load stopped: {q['end'].get('open')} client connections open, "
                f"{q['end']['fds']} fds (before the first request: {q['start']['fds']}; allowed +{q['allow']}): "
                f"{'ok' if q['ok'] else 'FAIL'}. fd kinds at the end: {q['end'].get('kinds')}.", ""]

    r = res["requests"]
    out += ["## Well-behaved requests (checked byte for byte)", "",
            f"{r['total']} requests: " + ", ".join(f"{v} {k}" for k, v in sorted(r["by_verdict"].items())) + ".",
            "ok = 200 and body verified; expected = a faulty-backend path answered with exactly its fault's code "
            "(or aborted) within its bound; fault = coded error or aborted response during an injected fault on its "
            "backend; refused = connection reset at accept during a flood past the handshake cap (never sent, sent "
            "again).", "", "| kind | " + " | ".join(["ok", "expected", "fault", "refused", "fail"]) + " |",
            "|---|---:|---:|---:|---:|---:|"]
    for kind, c in sorted(r["by_kind"].items()):
        out.append(f"| {kind} | " + " | ".join(str(c.get(v, 0)) for v in
                                               ("ok", "expected", "fault", "refused", "fail")) + " |")
    if r["failure_details"]:
        out += ["", "Failures (first ones):", ""]
        out += [f"- t={d['t0_rel']:.1f} s `{d['id']}`: {d['why']}: {d['request']}" for d in r["failure_details"]]

    pl = res["pcl_load"]
    out += ["", "## pcl-load (bulk, never-faulted route, must be all 2xx)", "",
            "| stream | segments | requests | errors | segments with refusals during a flood | failed segments |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, s in sorted(pl["streams"].items()):
        out.append(f"| {name} | {s['segments']} | {s['requests']} | {s['errors']} | {s['refused_segments']} | "
                   f"{s['failed_segments']} |")
    for d in pl["failure_details"]:
        out.append(f"- {d['stream']} segment {d['segment']}: {d['why']}")

    h = res["hostile"]
    out += ["", "## Hostile clients", "", "| kind | count | not bounded | answers seen | slowest close (s) |",
            "|---|---:|---:|---|---:|"]
    for kind, c in sorted(h["by_kind"].items()):
        ans = ", ".join(f"{k}: {v}" for k, v in sorted(c["answers"].items()))
        out.append(f"| {kind} | {c['count']} | {c['fail']} | {ans} | {c.get('max_closed_after_s', '')} |")
    for d in h["failure_details"]:
        out.append(f"- {d['kind']} at t={d['t0_rel']:.1f} s: {d['why']} {d['record']}")

    out += ["", "## Injected faults", "", "| t (s) | kind | what |", "|---:|---|---|"]
    for ev in res["faults"]:
        out.append(f"| {ev['t0']:.1f}–{ev['t1']:.1f} | {ev['kind']} | {ev['detail']} |")

    g = res["gateway"]
    out += ["", "## Gateway", "",
            f"Exit status at SIGTERM: {g.get('exit_code')}; log lines: {g.get('log_lines')} "
            f"(panics: {g.get('panics')}); refused at accept: {g.get('refused')}; backend pool: {g.get('pool')}; "
            f"responses by status: {g.get('requests_by_status')}.", ""]
    out += ["## Timeouts and caps used", "", "```toml", res["params"]["config"].strip(), "```", ""]
    return "\n".join(out)
