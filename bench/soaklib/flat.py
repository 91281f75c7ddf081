"""The flatness criterion for the gateway's open fds and RSS. Pure,
unit-tested in test_flat.py.

After the warm-up the samples are cut into 30 s windows. Each window gives
one value per metric: for fds the window's *minimum* (floods and new
connections come and go within seconds; a leak raises the floor under
them), for RSS the window's *median*. Baseline: the first minute after
the warm-up (its two windows' median for fds, its samples' median for
RSS). Flat means both of:

  (a) no window in the last 80 % of the measured time is above the baseline
      by more than the allowance (fds: 16; RSS: max(8 MiB, 10 %));
  (b) the least-squares slope of the window values over the whole measured
      time is under the limit (fds: 1 per minute; RSS: 256 KiB per minute,
      15 MiB an hour).

Plus, after the load stops and every timeout has run out: the gateway holds
no client connection (open-connections gauge 0) and at most 2 more fds than
it did before the first request.
"""
import statistics

WINDOW_S = 30.0
FD_ALLOW = 16
FD_SLOPE_PER_MIN = 1.0
RSS_ALLOW_MIN_KIB = 8 * 1024
RSS_ALLOW_FRACTION = 0.10
RSS_SLOPE_KIB_PER_MIN = 256.0
QUIET_FD_ALLOW = 2
LAST_FRACTION = 0.8


def windows(samples, t_from, t_to, key, reduce, width=WINDOW_S):
    """[(window mid time, reduce(values))] for full windows in [t_from, t_to)."""
    out = []
    start = t_from
    while start + width <= t_to + 1e-9:
        vals = [s[key] for s in samples if start <= s["t"] < start + width and key in s]
        if vals:
            out.append((start + width / 2, reduce(vals)))
        start += width
    return out


def ols_slope(points):
    """Least-squares slope of [(x, y)]; 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def judge(samples, warmup_end, run_end):
    """-> dict with every number, each criterion's pass flag and `flat`."""
    measured = run_end - warmup_end
    res = {"window_s": WINDOW_S, "warmup_end": warmup_end, "run_end": run_end, "measured_s": measured}
    if measured < 2 * 60:
        res.update(flat=False, why="under two minutes measured after the warm-up: too short to judge")
        return res
    last_from = warmup_end + (1 - LAST_FRACTION) * measured
    base_to = warmup_end + 60.0

    fd_w = windows(samples, warmup_end, run_end, "fds", min)
    fd_base = statistics.median([v for t, v in fd_w if t < base_to])
    fd_last_max = max(v for t, v in fd_w if t >= last_from)
    fd_slope = ols_slope([(t / 60.0, v) for t, v in fd_w])

    rss_w = windows(samples, warmup_end, run_end, "rss_kib", statistics.median)
    rss_base = statistics.median([s["rss_kib"] for s in samples if warmup_end <= s["t"] < base_to])
    rss_allow = max(RSS_ALLOW_MIN_KIB, RSS_ALLOW_FRACTION * rss_base)
    rss_last_max = max(v for t, v in rss_w if t >= last_from)
    rss_slope = ols_slope([(t / 60.0, v) for t, v in rss_w])

    res["fds"] = {
        "baseline_floor": fd_base, "allow": FD_ALLOW, "last80_max_floor": fd_last_max,
        "slope_per_min": round(fd_slope, 4), "slope_limit_per_min": FD_SLOPE_PER_MIN,
        "level_ok": fd_last_max <= fd_base + FD_ALLOW, "slope_ok": fd_slope < FD_SLOPE_PER_MIN,
        "windows": [(round(t, 1), v) for t, v in fd_w],
    }
    res["rss"] = {
        "baseline_kib": rss_base, "allow_kib": round(rss_allow), "last80_max_median_kib": rss_last_max,
        "slope_kib_per_min": round(rss_slope, 2), "slope_limit_kib_per_min": RSS_SLOPE_KIB_PER_MIN,
        "level_ok": rss_last_max <= rss_base + rss_allow, "slope_ok": rss_slope < RSS_SLOPE_KIB_PER_MIN,
        "windows": [(round(t, 1), v) for t, v in rss_w],
    }
    res["flat"] = all(res[m][k] for m in ("fds", "rss") for k in ("level_ok", "slope_ok"))
    return res


def judge_quiet(start, end):
    """`start`/`end`: {"fds", "open"} before the first request and after the
    load stopped and the timeouts ran out."""
    ok = end.get("open") == 0 and end["fds"] <= start["fds"] + QUIET_FD_ALLOW
    return {"start": start, "end": end, "allow": QUIET_FD_ALLOW, "ok": ok}
