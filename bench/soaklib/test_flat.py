"""Unit tests of the flatness criterion (flat.py), the plot (svg.py) and the
fault schedule (faults.make_schedule)."""
import random
import unittest
import xml.etree.ElementTree as ET

from soaklib import faults, flat, svg

T = {"backend_response": 5}


def series(minutes, fd, rss, seed=1):
    rng = random.Random(seed)
    out = []
    for i in range(int(minutes * 60)):
        out.append({"t": 1000.0 + i, "fds": fd(i) + (rng.randint(0, 150) if i % 45 < 4 else rng.randint(0, 3)),
                    "rss_kib": rss(i) + rng.randint(-2048, 2048), "portcullis_open_connections": 20})
    return out


class Flatness(unittest.TestCase):
    def test_flat_with_spiky_floods_passes(self):
        s = series(10, lambda i: 60, lambda i: 40_000)
        r = flat.judge(s, 1120.0, 1600.0)
        self.assertTrue(r["flat"], r)

    def test_a_slow_fd_leak_fails(self):
        # One fd every 30 s: 2 per minute.
        s = series(10, lambda i: 60 + i // 30, lambda i: 40_000)
        r = flat.judge(s, 1120.0, 1600.0)
        self.assertFalse(r["fds"]["slope_ok"])
        self.assertFalse(r["flat"])

    def test_a_slow_rss_leak_fails(self):
        # 512 KiB a minute.
        s = series(10, lambda i: 60, lambda i: 40_000 + i * 512 // 60)
        r = flat.judge(s, 1120.0, 1600.0)
        self.assertFalse(r["rss"]["slope_ok"])
        self.assertTrue(r["fds"]["slope_ok"] and r["fds"]["level_ok"])

    def test_a_step_up_late_fails_on_level(self):
        s = series(10, lambda i: 60 + (40 if i > 500 else 0), lambda i: 40_000)
        self.assertFalse(flat.judge(s, 1120.0, 1600.0)["fds"]["level_ok"])

    def test_too_short_to_judge(self):
        s = series(2, lambda i: 60, lambda i: 40_000)
        self.assertFalse(flat.judge(s, 1090.0, 1120.0)["flat"])

    def test_slope(self):
        self.assertAlmostEqual(flat.ols_slope([(0, 1), (1, 3), (2, 5)]), 2.0)
        self.assertEqual(flat.ols_slope([(0, 1)]), 0.0)

    def test_quiet(self):
        self.assertTrue(flat.judge_quiet({"fds": 20}, {"fds": 22, "open": 0})["ok"])
        self.assertFalse(flat.judge_quiet({"fds": 20}, {"fds": 23, "open": 0})["ok"])
        self.assertFalse(flat.judge_quiet({"fds": 20}, {"fds": 20, "open": 1})["ok"])


class Plot(unittest.TestCase):
    def test_well_formed_svg_with_fault_marks(self):
        s = series(3, lambda i: 60, lambda i: 40_000)
        r = flat.judge(s, 1030.0, 1180.0)
        ev = [{"kind": "kill9", "t0": 1050.0, "t1": 1052.0}, {"kind": "cap_flood", "t0": 1100.0, "t1": 1103.0}]
        doc = svg.plot(s, 1000.0, ev, 30.0, r, "test <&>")
        root = ET.fromstring(doc)
        self.assertTrue(root.tag.endswith("svg"))
        self.assertEqual(doc.count("<polyline"), 3)
        self.assertIn(svg.FAULT_COLOURS["kill9"], doc)
        self.assertIn("test &lt;&amp;&gt;", doc)


class Schedule(unittest.TestCase):
    def test_reproducible_spaced_and_clear_of_the_end(self):
        a = faults.make_schedule(7, 600, T)
        self.assertEqual(a, faults.make_schedule(7, 600, T))
        self.assertNotEqual(a, faults.make_schedule(8, 600, T))
        self.assertGreater(len(a), 8)
        for (at, _, dur), (nxt, _, _) in zip(a, a[1:]):
            self.assertGreaterEqual(nxt - (at + dur), 20.0)
        at, _, dur = a[-1]
        self.assertLessEqual(at + dur, 600 - faults.QUIET_END)
        self.assertEqual({k for _, k, _ in faults.make_schedule(1, 3600, T)}, set(faults.WEIGHTS))


if __name__ == "__main__":
    unittest.main()
