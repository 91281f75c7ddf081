"""What each answer may be: the soak's verdict on every request a
well-behaved client made, and on what every hostile client saw. Pure: no
I/O, unit-tested in test_expect.py.

A well-behaved request passes when:
- it is answered correctly (status 200, body verified byte for byte), or
- its path is one of the faulty backend's (FAULT_PATHS) and it got exactly
  the coded error (or the aborted response) that fault must give, within
  the configured bound, or
- it overlapped a fault injected on its backend and got the coded error (or
  aborted response, with every byte before the abort correct) that fault may
  cause (FAULT_EFFECTS), or
- it was refused at accept while a connection flood held the handshake cap
  (its connection never completed a handshake, so the request was never
  sent; the checker sends it again on a new connection).
Anything else fails: a wrong body, a 5xx with no fault behind it, a reset on
a well-behaved connection, a request never answered (client timeout).
"""

# Outcome of a request to the faulty backend, by the request's kind.
# ("status", status, code, bound) | ("abort", body bytes before the abort, bound)
# | ("ok", None, None, None). `bound` names the timeout the answer must come
# within (it must also not come much earlier).
FAULT_PATHS = {
    "f_ok": ("ok", None, None, None),
    "f_slowhead": ("ok", None, None, None),
    "f_trickle": ("ok", None, None, None),
    "f_extra": ("ok", None, None, None),
    "f_hang": ("status", 504, "PCS.5040", "backend_response"),
    "f_garbage": ("status", 502, "PCS.5022", None),
    "f_badcl": ("status", 502, "PCS.5022", None),
    "f_close": ("status", 502, "PCS.5021", None),
    "f_reset": ("status", 502, "PCS.5021", None),
    "f_truncate": ("abort", 40000, None),
    "f_stall": ("abort", 40000, "backend_response"),
    # The gateway may or may not have sent the head before it read the bad
    # chunk size (TCP decides): a 502, or the head and at most the one good
    # chunk then an abort, are both honest.
    "f_chunkgarbage": ("status_or_abort", 502, "PCS.5022", 1000),
    "n_connect": ("status", 504, "PCS.5041", "backend_connect"),
}

# What an injected fault may do to a request on that backend that overlaps it.
FAULT_EFFECTS = {
    # kill -9 then restart: refused (5020), reset or closed under a request
    # (5021), or a response cut off mid-body.
    "kill9": {"codes": {(502, "PCS.5020"), (502, "PCS.5021")}, "abort": True},
    # SIGSTOP past backend_response: the response times out (5040); a connect
    # may time out too if the stopped backend's accept queue fills (5041).
    "hang": {"codes": {(504, "PCS.5040"), (504, "PCS.5041")}, "abort": True},
    # SIGSTOP well under every timeout: nothing but delay is allowed.
    "stall": {"codes": set(), "abort": False},
}

ABORT_ENDS = ("reset", "eof_unclean")
# How a connection refused at accept looks from the client's handshake.
REFUSED_ENDS = ("reset", "eof_unclean", "eof_clean", "tls_error", "error")

# Seconds: a fault window is widened by this on its far side (the restarted
# backend's first accept, the gateway's pool noticing), and a bounded answer
# may come this much later than its timeout on a loaded 2-core machine.
GRACE = 1.0
BOUND_SLACK = 5.0


def overlaps(rec, ev, grace=GRACE):
    return rec["t0"] <= ev["t1"] + grace and rec["t1"] >= ev["t0"]


def _answered_ok(rec):
    return rec.get("phase") == "done" and rec.get("status") == 200 and rec.get("body_ok") is True


def _coded(rec, allowed=()):
    """(status, code) of a complete error answer. A response to HEAD has no
    body to carry the code: its status alone is matched against `allowed`."""
    if rec.get("phase") != "done":
        return None
    if rec.get("method") == "HEAD" and rec.get("code") is None:
        return next((a for a in allowed if a[0] == rec.get("status")), (rec.get("status"), None))
    return rec.get("status"), rec.get("code")


def _aborted(rec):
    """A response cut off by a reset or an unclean TLS end, with every byte
    that did arrive correct (a clean close mid-body would pass for complete)."""
    return (rec.get("end") in ABORT_ENDS and rec.get("phase") in ("send", "head", "body")
            and rec.get("prefix_ok") is not False)


def _bound_ok(rec, bound, timeouts):
    if bound is None:
        return True, ""
    limit = timeouts[bound]
    took = rec["t1"] - rec["t0"]
    if took > limit + BOUND_SLACK:
        return False, f"took {took:.1f} s, past {bound} {limit} s + {BOUND_SLACK} s"
    if took < limit - 0.5:
        return False, f"took {took:.1f} s, before {bound} {limit} s ran out"
    return True, ""


def describe(rec):
    parts = [f"{rec.get('method')} {rec.get('path')}", f"phase={rec.get('phase')}"]
    for k in ("status", "code", "end", "bytes", "body_ok", "prefix_ok", "detail"):
        if rec.get(k) not in (None, ""):
            parts.append(f"{k}={rec[k]}")
    return " ".join(str(p) for p in parts)


def classify(rec, events, timeouts):
    """-> (verdict, reason). verdict: "ok" | "expected" | "fault" | "refused" | "fail".
    `events`: injected faults, each {"kind", "target", "t0", "t1"}; cap
    floods have kind "cap_flood" and target "*"."""
    kind = rec.get("kind", "")
    if rec.get("head_extra"):
        return "fail", f"{rec['head_extra']} bytes after the head of a HEAD response"
    exp = FAULT_PATHS.get(kind)
    if exp is None and _answered_ok(rec):
        return "ok", ""
    if exp is not None:
        verdict, why = _fault_path(rec, exp, timeouts)
        if verdict != "fail":
            return verdict, why
    else:
        why = "not answered correctly"

    # Refused at accept during a flood past the handshake cap: never sent.
    if (rec.get("fresh") and rec.get("phase") in ("connect", "handshake")
            and rec.get("end") in REFUSED_ENDS):
        for ev in events:
            if ev["kind"] == "cap_flood" and overlaps(rec, ev):
                return "refused", "connection refused at accept during a connection flood"

    for ev in events:
        if ev["target"] != rec.get("target") or not overlaps(rec, ev):
            continue
        effect = FAULT_EFFECTS.get(ev["kind"])
        if effect is None:
            continue
        if _coded(rec, effect["codes"]) in effect["codes"]:
            return "fault", f"{rec['status']} {rec['code']} during {ev['kind']}"
        if effect["abort"] and _aborted(rec):
            return "fault", f"aborted ({rec.get('end')} in {rec.get('phase')}) during {ev['kind']}"
    return "fail", why


def _fault_path(rec, exp, timeouts):
    shape = exp[0]
    if shape == "ok":
        return ("expected", "") if _answered_ok(rec) else ("fail", "faulty backend's good path not answered correctly")
    if shape == "status":
        _, status, code, bound = exp
        if _coded(rec) != (status, code):
            return "fail", f"expected {status} {code}"
        ok, why = _bound_ok(rec, bound, timeouts)
        return ("expected", "") if ok else ("fail", why)
    if shape == "abort":
        _, nbytes, bound = exp
        if not (rec.get("status") == 200 and rec.get("phase") == "body" and _aborted(rec)
                and rec.get("bytes") == nbytes):
            return "fail", f"expected 200, {nbytes} correct body bytes, then a reset or an unclean TLS end"
        ok, why = _bound_ok(rec, bound, timeouts)
        return ("expected", "") if ok else ("fail", why)
    if shape == "status_or_abort":
        _, status, code, nbytes = exp
        if _coded(rec) == (status, code):
            return "expected", ""
        if (rec.get("status") == 200 and rec.get("phase") == "body" and _aborted(rec)
                and rec.get("bytes", 0) <= nbytes):
            return "expected", ""
        return "fail", f"expected {status} {code}, or 200 with at most {nbytes} correct body bytes then an abort"
    return "fail", f"unknown expectation {shape}"


# What the gateway must do to each hostile client, and by when.
# kind -> (timeout name the gateway acts on, statuses it may answer with before closing)
HOSTILE = {
    "slowloris_head": ("request_head", {(408, "PCS.4080"), None}),
    "idle_tls": ("request_head", {(408, "PCS.4080"), None}),
    "slowloris_body": ("request_body", {(408, "PCS.4081"), None}),
    "silent_tcp": ("handshake", {None}),
    "partial_hello": ("handshake", {None}),
    "garbage_tcp": ("handshake", {None}),
    "garbage_http": (None, {(400, "PCS.4000"), (505, "PCS.5050"), (400, "PCS.4002"), None}),
    "smuggle": (None, {(400, "PCS.4001"), None}),
    # When it was dropped cannot be seen without reading; what is read
    # afterwards shows whether it was (see classify_hostile).
    "never_read": (None, {None}),
}


def classify_hostile(rec, timeouts):
    """-> (verdict, reason): "ok" when the gateway closed the connection
    within its bound (+ slack) and answered, if at all, with the right code.
    Kinds not in HOSTILE (resets by the client) have nothing to check."""
    spec = HOSTILE.get(rec.get("kind"))
    if spec is None:
        return "ok", ""
    bound, answers = spec
    if not rec.get("closed"):
        return "fail", "the gateway had not closed the connection when the client gave up"
    seen = (rec.get("status"), rec.get("code")) if rec.get("status") else None
    if seen not in answers:
        return "fail", f"answered {seen}, expected one of {sorted(a for a in answers if a)}"
    if rec.get("kind") == "never_read":
        # Dropped after `send` once its socket buffers were full: what the
        # client drains afterwards is at most what was in flight.
        if rec.get("drained", 0) > rec.get("drain_limit", 1 << 62):
            return "fail", f"drained {rec['drained']} bytes: the gateway kept sending"
    if bound is not None:
        took = rec.get("closed_after")
        limit = timeouts[bound] + BOUND_SLACK
        if took is None or took > limit:
            return "fail", f"closed after {took} s, bound {bound} {timeouts[bound]} s + {BOUND_SLACK} s"
    return "ok", ""


PCL_REFUSAL_DETAILS = (
    "tls_handshake: connection closed by the server during the handshake",
    "tls_handshake: read:",
    "tls_handshake: write:",
    # The same reset at accept, seen by connect itself: io_uring completes a
    # non-blocking connect by retrying it once the socket is ready, and when
    # the gateway's RST has landed by then the retry reports it
    # (the 60-minute run of 2026-12-01T1421Z: 6 such, each in a segment
    # that overlapped a flood and was refused there in the usual way too).
    "connect: Connection reset by peer",
)


def classify_pcl(segment, events):
    """A pcl-load segment (its JSON plus t0/t1): every response must be 2xx
    and there must be no errors, except handshake refusals in a segment that
    overlapped a connection flood past the cap. -> (verdict, reason)."""
    j = segment.get("json")
    if not j:
        return "fail", f"no JSON from pcl-load (exit {segment.get('exit')})"
    if j.get("requests", 0) == 0:
        return "fail", "no request completed"
    bad = {k: v for k, v in j.get("responses", {}).items() if k != "2xx" and v}
    if bad:
        return "fail", f"non-2xx responses {bad}"
    details = {k: v for k, v in (j.get("error_details") or {}).items() if v}
    if not details:
        return "ok", ""
    flood = any(ev["kind"] == "cap_flood" and overlaps(segment, ev) for ev in events)
    unexplained = {k: v for k, v in details.items()
                   if not (flood and k.startswith(PCL_REFUSAL_DETAILS))}
    if unexplained:
        return "fail", f"errors {unexplained}"
    return "refused", f"handshakes refused during a connection flood: {details}"
