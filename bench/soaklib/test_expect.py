"""Unit tests of the soak's verdicts (expect.py)."""
import unittest

from soaklib import expect

T = {"handshake": 5, "request_head": 5, "idle": 15, "backend_connect": 2, "backend_response": 5,
     "request_body": 10, "send": 5}


def rec(**kw):
    r = dict(id="x", kind="get_bytes", target="e", method="GET", path="/e/b", fresh=False, phase="done",
             status=200, code=None, end="complete", bytes=10, body_ok=True, prefix_ok=True, t0=100.0, t1=100.1)
    r.update(kw)
    return r


KILL = {"kind": "kill9", "target": "e", "t0": 100.05, "t1": 102.0}
FLOOD = {"kind": "cap_flood", "target": "*", "t0": 99.0, "t1": 102.0}


class WellBehaved(unittest.TestCase):
    def test_correct_answer_passes(self):
        self.assertEqual(expect.classify(rec(), [], T)[0], "ok")

    def test_wrong_body_fails_even_during_a_fault(self):
        self.assertEqual(expect.classify(rec(body_ok=False), [KILL], T)[0], "fail")

    def test_5xx_without_a_fault_fails(self):
        self.assertEqual(expect.classify(rec(status=502, code="PCS.5021", body_ok=False), [], T)[0], "fail")

    def test_coded_error_of_an_overlapping_fault_passes(self):
        r = rec(status=502, code="PCS.5020", body_ok=False)
        self.assertEqual(expect.classify(r, [KILL], T)[0], "fault")
        # ...but not another fault's code, nor a fault on another backend, nor one long over.
        self.assertEqual(expect.classify(rec(status=504, code="PCS.5040", body_ok=False), [KILL], T)[0], "fail")
        self.assertEqual(expect.classify(rec(status=502, code="PCS.5020", target="s"), [KILL], T)[0], "fail")
        late = rec(status=502, code="PCS.5020", t0=110.0, t1=110.1)
        self.assertEqual(expect.classify(late, [KILL], T)[0], "fail")

    def test_aborted_response_during_a_kill_passes_only_with_a_correct_prefix_and_an_unclean_end(self):
        r = rec(phase="body", end="reset", bytes=5000, prefix_ok=True)
        self.assertEqual(expect.classify(r, [KILL], T)[0], "fault")
        self.assertEqual(expect.classify(dict(r, prefix_ok=False), [KILL], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, end="eof_clean"), [KILL], T)[0], "fail")
        self.assertEqual(expect.classify(r, [], T)[0], "fail")

    def test_head_errors_match_on_status_and_stray_bytes_fail(self):
        r = rec(method="HEAD", kind="head_bytes", status=502, code=None, body_ok=False, head_extra=0)
        self.assertEqual(expect.classify(r, [KILL], T)[0], "fault")
        self.assertEqual(expect.classify(dict(r, status=504), [KILL], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, head_extra=90), [KILL], T)[0], "fail")
        ok = rec(method="HEAD", kind="head_bytes", head_extra=0)
        self.assertEqual(expect.classify(ok, [], T)[0], "ok")

    def test_a_stall_allows_nothing_but_delay(self):
        stall = {"kind": "stall", "target": "e", "t0": 100.0, "t1": 101.0}
        self.assertEqual(expect.classify(rec(status=504, code="PCS.5040"), [stall], T)[0], "fail")

    def test_lost_request_fails(self):
        self.assertEqual(expect.classify(rec(phase="head", end="timeout", status=None), [KILL], T)[0], "fail")

    def test_refusal_at_accept_is_allowed_only_during_a_flood_and_before_the_request(self):
        r = rec(fresh=True, phase="handshake", end="reset", status=None)
        self.assertEqual(expect.classify(r, [FLOOD], T)[0], "refused")
        self.assertEqual(expect.classify(r, [], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, phase="head"), [FLOOD], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, fresh=False), [FLOOD], T)[0], "fail")


class FaultPaths(unittest.TestCase):
    def test_hang_needs_5040_within_its_bound(self):
        r = rec(kind="f_hang", target="f", status=504, code="PCS.5040", t0=0.0, t1=5.1)
        self.assertEqual(expect.classify(r, [], T)[0], "expected")
        self.assertEqual(expect.classify(dict(r, t1=12.0), [], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, t1=1.0), [], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, code="PCS.5021"), [], T)[0], "fail")

    def test_truncation_must_abort_after_exactly_what_was_sent(self):
        r = rec(kind="f_truncate", target="f", phase="body", end="reset", bytes=40000)
        self.assertEqual(expect.classify(r, [], T)[0], "expected")
        self.assertEqual(expect.classify(dict(r, end="eof_unclean"), [], T)[0], "expected")
        self.assertEqual(expect.classify(dict(r, end="eof_clean"), [], T)[0], "fail")
        self.assertEqual(expect.classify(dict(r, bytes=39999), [], T)[0], "fail")

    def test_bad_chunk_is_a_502_or_an_abort_after_the_head(self):
        r = rec(kind="f_chunkgarbage", target="f", status=502, code="PCS.5022")
        self.assertEqual(expect.classify(r, [], T)[0], "expected")
        a = rec(kind="f_chunkgarbage", target="f", phase="body", end="reset", bytes=0)
        self.assertEqual(expect.classify(a, [], T)[0], "expected")
        # A reset with no response at all is a failure.
        n = rec(kind="f_chunkgarbage", target="f", phase="head", end="reset", status=None, bytes=0)
        self.assertEqual(expect.classify(n, [], T)[0], "fail")

    def test_good_paths_of_the_faulty_backend_must_be_correct(self):
        self.assertEqual(expect.classify(rec(kind="f_extra", target="f"), [], T)[0], "expected")
        self.assertEqual(expect.classify(rec(kind="f_extra", target="f", body_ok=False), [], T)[0], "fail")


class Hostile(unittest.TestCase):
    def test_bounded_and_answered_right(self):
        r = {"kind": "slowloris_head", "closed": True, "closed_after": 5.2, "status": 408, "code": "PCS.4080"}
        self.assertEqual(expect.classify_hostile(r, T)[0], "ok")
        self.assertEqual(expect.classify_hostile(dict(r, status=None, code=None), T)[0], "ok")
        self.assertEqual(expect.classify_hostile(dict(r, closed_after=30.0), T)[0], "fail")
        self.assertEqual(expect.classify_hostile(dict(r, closed=False), T)[0], "fail")
        self.assertEqual(expect.classify_hostile(dict(r, status=400, code="PCS.4000"), T)[0], "fail")

    def test_never_read_must_not_keep_sending(self):
        r = {"kind": "never_read", "closed": True, "drained": 3 << 20, "drain_limit": 32 << 20}
        self.assertEqual(expect.classify_hostile(r, T)[0], "ok")
        self.assertEqual(expect.classify_hostile(dict(r, drained=33 << 20), T)[0], "fail")


class Pcl(unittest.TestCase):
    def seg(self, **j):
        base = {"requests": 100, "responses": {"2xx": 100}, "error_details": {}}
        base.update(j)
        return {"t0": 100.0, "t1": 160.0, "json": base}

    def test_clean_segment(self):
        self.assertEqual(expect.classify_pcl(self.seg(), [])[0], "ok")

    def test_non_2xx_fails(self):
        self.assertEqual(expect.classify_pcl(self.seg(responses={"2xx": 99, "5xx": 1}), [FLOOD])[0], "fail")

    def test_handshake_refusals_only_during_a_flood(self):
        s = self.seg(error_details={"tls_handshake: connection closed by the server during the handshake": 3})
        self.assertEqual(expect.classify_pcl(s, [FLOOD])[0], "refused")
        self.assertEqual(expect.classify_pcl(s, [])[0], "fail")
        bad = self.seg(error_details={"read: Connection reset by peer": 1})
        self.assertEqual(expect.classify_pcl(bad, [FLOOD])[0], "fail")
        at_connect = self.seg(error_details={"connect: Connection reset by peer (os error 104)": 1})
        self.assertEqual(expect.classify_pcl(at_connect, [FLOOD])[0], "refused")
        self.assertEqual(expect.classify_pcl(at_connect, [])[0], "fail")
        refused = self.seg(error_details={"connect: Connection refused (os error 111)": 1})
        self.assertEqual(expect.classify_pcl(refused, [FLOOD])[0], "fail")


if __name__ == "__main__":
    unittest.main()
