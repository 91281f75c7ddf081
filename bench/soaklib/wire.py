"""HTTP/1.1 on the client side, as strict as a checker must be: a response
head parser, an incremental chunked decoder (both pure, unit-tested), a
buffered reader over a socket, and the naming of how a connection ended.

How a connection ends matters to the soak: a body cut short must arrive as
a reset or an unclean TLS EOF, never as a clean close_notify that could pass
for a complete response.
"""
import socket
import ssl

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The gateway sent something that is not HTTP/1.1 as we asked for it."""


def parse_head(raw):
    """`raw`: the bytes of a response head up to and including the blank
    line. Returns (status, headers) with headers as a list of (lowercased
    name, value) pairs."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as e:  # latin-1 decodes anything; kept for clarity
        raise ProtocolError(str(e))
    if not text.endswith("\r\n\r\n"):
        raise ProtocolError("head does not end with CRLF CRLF")
    lines = text[:-4].split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or status_line[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    if not (len(status_line[1]) == 3 and status_line[1].isdigit()):
        raise ProtocolError(f"bad status code {status_line[1][:10]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or "\n" in line:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    return int(status_line[1]), headers


def header(headers, name):
    """The single value of `name`, None when absent; repeated -> ProtocolError."""
    values = [v for n, v in headers if n == name]
    if len(values) > 1:
        raise ProtocolError(f"{name} repeated: {values}")
    return values[0] if values else None


def framing(status, headers, is_head):
    """("none"|"length"|"chunked"|"close", length). Both CL and TE is an error
    here: the gateway must never send it."""
    te = header(headers, "transfer-encoding")
    cl = header(headers, "content-length")
    if te is not None and cl is not None:
        raise ProtocolError("both Content-Length and Transfer-Encoding")
    if is_head or status in (204, 304) or 100 <= status < 200:
        return "none", 0
    if te is not None:
        if te.lower() != "chunked":
            raise ProtocolError(f"transfer-encoding {te!r}")
        return "chunked", 0
    if cl is not None:
        if not cl.isdigit():
            raise ProtocolError(f"content-length {cl!r}")
        return "length", int(cl)
    return "close", 0


class Chunked:
    """Incremental chunked decoder: feed() bytes, get back (data pieces,
    bytes consumed); `done` once the last chunk and trailers are in."""

    def __init__(self):
        self.state = "size"
        self.left = 0
        self.done = False

    def feed(self, buf):
        pieces = []
        pos = 0
        while pos < len(buf) and not self.done:
            if self.state == "size":
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > 1024:
                        raise ProtocolError("chunk size line too long")
                    break
                line = bytes(buf[pos:end]).split(b";", 1)[0].strip()
                try:
                    self.left = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line[:20]!r}")
                if line.startswith((b"+", b"-", b"0x", b"0X")):
                    raise ProtocolError(f"bad chunk size {line[:20]!r}")
                pos = end + 2
                self.state = "trailer" if self.left == 0 else "data"
            elif self.state == "data":
                n = min(self.left, len(buf) - pos)
                pieces.append(bytes(buf[pos:pos + n]))
                pos += n
                self.left -= n
                if self.left == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self.state = "size"
            elif self.state == "trailer":
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                if end == pos:
                    self.done = True
                pos = end + 2
        return pieces, pos


def end_kind(exc):
    """How a connection ended, from the exception a read or write raised."""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, ssl.SSLEOFError):
        return "eof_unclean"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "error"


class Ended(Exception):
    """The connection ended (cleanly: b"" from recv) where more was expected."""


class Reader:
    """Buffered reads from a (TLS) socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(256 * 1024)
        if not data:
            raise Ended("connection closed cleanly")
        self.buf += data

    def head(self):
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                raw = bytes(self.buf[:end + 4])
                del self.buf[:end + 4]
                return raw
            if len(self.buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
            self.fill()

    def body(self, kind, length, sink):
        """Reads a body, handing each piece to sink(offset, bytes)."""
        offset = 0
        if kind == "none":
            return 0
        if kind == "length":
            while offset < length:
                if not self.buf:
                    self.fill()
                n = min(length - offset, len(self.buf))
                sink(offset, bytes(self.buf[:n]))
                del self.buf[:n]
                offset += n
            return offset
        if kind == "chunked":
            dec = Chunked()
            while True:
                pieces, used = dec.feed(self.buf)
                del self.buf[:used]
                for p in pieces:
                    sink(offset, p)
                    offset += len(p)
                if dec.done:
                    return offset
                self.fill()
        # Delimited by the connection's end: only a clean close ends it.
        if self.buf:
            sink(offset, bytes(self.buf))
            offset += len(self.buf)
            self.buf.clear()
        while True:
            try:
                self.fill()
            except Ended:
                return offset
            sink(offset, bytes(self.buf))
            offset += len(self.buf)
            self.buf.clear()
