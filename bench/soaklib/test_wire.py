"""Unit tests of the client-side HTTP/1.1 framing (wire.py) and the echo
pattern (common.py). Run: cd bench && python3 -m unittest discover -s soaklib -t ."""
import unittest

from soaklib.common import PERIOD, pattern_at, pattern_matches
from soaklib.wire import Chunked, ProtocolError, framing, parse_head


class Head(unittest.TestCase):
    def test_status_and_headers(self):
        status, headers = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\nX-A:  b \r\n\r\n")
        self.assertEqual(status, 502)
        self.assertEqual(headers, [("content-length", "7"), ("x-a", "b")])

    def test_rejects_what_the_gateway_must_never_send(self):
        for raw in (b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n"):
            with self.assertRaises(ProtocolError, msg=raw):
                parse_head(raw)

    def test_framing(self):
        self.assertEqual(framing(200, [("content-length", "10")], False), ("length", 10))
        self.assertEqual(framing(200, [("content-length", "10")], True), ("none", 0))
        self.assertEqual(framing(200, [("transfer-encoding", "chunked")], False), ("chunked", 0))
        self.assertEqual(framing(200, [], False), ("close", 0))
        self.assertEqual(framing(204, [], False), ("none", 0))
        for bad in ([("content-length", "1"), ("transfer-encoding", "chunked")],
                    [("content-length", "1"), ("content-length", "1")],
                    [("content-length", "-1")], [("transfer-encoding", "gzip")]):
            with self.assertRaises(ProtocolError, msg=bad):
                framing(200, bad, False)


class ChunkedDecoder(unittest.TestCase):
    BODY = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"

    def decode(self, data, step):
        dec, buf, out = Chunked(), bytearray(), b""
        for i in range(0, len(data), step):
            buf += data[i:i + step]
            pieces, used = dec.feed(buf)
            del buf[:used]
            out += b"".join(pieces)
        return dec, out, bytes(buf)

    def test_any_split_gives_the_same_body(self):
        for step in range(1, len(self.BODY) + 1):
            dec, out, rest = self.decode(self.BODY, step)
            self.assertTrue(dec.done, step)
            self.assertEqual(out, b"hello world", step)
            self.assertEqual(rest, b"", step)

    def test_bad_framing_is_an_error(self):
        for bad in (b"zz\r\n", b"5\r\nhelloXX", b"-5\r\n", b"0x5\r\n"):
            with self.assertRaises(ProtocolError, msg=bad):
                Chunked().feed(bytearray(bad))


class Pattern(unittest.TestCase):
    def test_byte_i_is_i_mod_251(self):
        data = pattern_at(0, 3 * PERIOD + 7)
        self.assertEqual(list(data[:3]), [0, 1, 2])
        self.assertEqual(data[PERIOD], 0)
        self.assertTrue(all(b == i % PERIOD for i, b in enumerate(data)))

    def test_matches_at_any_offset_and_length(self):
        whole = pattern_at(0, 2_000_000)
        for off, n in ((0, 0), (1, 250), (250, 2), (12345, 1_500_000)):
            self.assertTrue(pattern_matches(off, whole[off:off + n]))
        wrong = bytearray(whole[100:5000])
        wrong[4000] ^= 1
        self.assertFalse(pattern_matches(100, bytes(wrong)))
        self.assertFalse(pattern_matches(101, whole[100:200]))


if __name__ == "__main__":
    unittest.main()
