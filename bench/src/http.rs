//! HTTP/1.1 requests (built once) and an incremental response parser that
//! reads status line and headers and skips bodies (Content-Length, chunked,
//! or until EOF) without keeping them.

use crate::args::Args;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// The request every connection of the run sends, serialised once.
pub fn build_request(args: &Args) -> Vec<u8> {
    let has = |name: &str| {
        args.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", args.method, args.target.path);
    if !has("host") {
        head.push_str(&format!("Host: {}\r\n", args.target.authority));
    }
    if !has("user-agent") {
        head.push_str(concat!(
            "User-Agent: pcl-load/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
    }
    if !has("accept") {
        head.push_str("Accept: */*\r\n");
    }
    for (k, v) in &args.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if args.new_conn && !has("connection") {
        // One request per connection: let the server close first, so the
        // TIME_WAIT state lands on its side and not on our ephemeral ports.
        head.push_str("Connection: close\r\n");
    }
    let wants_length =
        args.body_size > 0 || matches!(args.method.as_str(), "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", args.body_size));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.resize(req.len() + args.body_size, b'x');
    req
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// False when the server said Connection: close, spoke HTTP/1.0 without
    /// keep-alive, or delimited the body by closing the connection.
    pub keep_alive: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    Done(Response),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilEof,
}

pub struct Parser {
    state: State,
    head_request: bool,
    status: u16,
    keep_alive: bool,
    /// Bytes of the head buffer already searched for the blank line.
    scanned: usize,
}

impl Parser {
    pub fn new(head_request: bool) -> Self {
        Parser {
            state: State::Head,
            head_request,
            status: 0,
            keep_alive: true,
            scanned: 0,
        }
    }

    /// Ready for the next response on the same connection.
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.status = 0;
        self.keep_alive = true;
        self.scanned = 0;
    }

    /// Consumes a prefix of `buf`. Returns how much, and whether a response
    /// is now complete; unconsumed bytes must be offered again with more
    /// appended.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, Progress), String> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let Some(end) = find_head_end(rest, self.scanned) else {
                        if rest.len() > MAX_HEAD {
                            return Err("response head longer than 64 KiB".into());
                        }
                        self.scanned = rest.len().saturating_sub(3);
                        return Ok((pos, Progress::NeedMore));
                    };
                    self.scanned = 0;
                    self.parse_head(&rest[..end])?;
                    pos += end;
                }
                State::Length(0) => return Ok((pos, self.done())),
                State::Length(n) => {
                    let take = n.min(rest.len() as u64);
                    pos += take as usize;
                    self.state = State::Length(n - take);
                    if n - take > 0 {
                        return Ok((pos, Progress::NeedMore));
                    }
                }
                State::ChunkSize => {
                    let Some(line) = take_line(rest)? else {
                        return Ok((pos, Progress::NeedMore));
                    };
                    pos += line.len();
                    let size = parse_chunk_size(line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    pos += take as usize;
                    if n - take > 0 {
                        self.state = State::ChunkData(n - take);
                        return Ok((pos, Progress::NeedMore));
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => {
                    let Some(line) = take_line(rest)? else {
                        return Ok((pos, Progress::NeedMore));
                    };
                    if line != b"\r\n" && line != b"\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    pos += line.len();
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(line) = take_line(rest)? else {
                        return Ok((pos, Progress::NeedMore));
                    };
                    pos += line.len();
                    if line == b"\r\n" || line == b"\n" {
                        return Ok((pos, self.done()));
                    }
                }
                State::UntilEof => return Ok((buf.len(), Progress::NeedMore)),
            }
        }
    }

    /// The connection reached EOF: completes a response delimited by close,
    /// and is an error anywhere else.
    pub fn eof(&mut self) -> Result<Response, String> {
        match self.state {
            State::UntilEof => match self.done() {
                Progress::Done(r) => Ok(r),
                Progress::NeedMore => unreachable!(),
            },
            State::Head => Err("connection closed before a complete response head".into()),
            _ => Err("connection closed in the middle of the response body".into()),
        }
    }

    fn done(&mut self) -> Progress {
        let r = Response {
            status: self.status,
            keep_alive: self.keep_alive && self.state != State::UntilEof,
        };
        self.state = State::Head;
        Progress::Done(r)
    }

    fn parse_head(&mut self, head: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8 / ASCII")?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let http11 = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return Err(format!("bad status line {:?}", truncate(status_line))),
        };
        let code = parts.next().unwrap_or("");
        let status: u16 = match code.parse() {
            Ok(s) if code.len() == 3 && (100..=999).contains(&s) => s,
            _ => return Err(format!("bad status code in {:?}", truncate(status_line))),
        };
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut close = false;
        let mut keep_alive_token = false;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {:?}", truncate(line)))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {:?}", truncate(value)))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length headers".into());
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
                if !chunked {
                    // A non-chunked final coding is delimited by close (RFC 9112 6.3).
                    close = true;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',') {
                    let token = token.trim();
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive_token = true;
                    }
                }
            }
        }
        self.status = status;
        self.keep_alive = !close && (http11 || keep_alive_token);
        self.state = if (100..200).contains(&status) {
            // Interim response (100 Continue, 103 Early Hints): the final one follows.
            if status == 101 {
                return Err("unexpected 101 Switching Protocols".into());
            }
            State::Head
        } else if self.head_request || status == 204 || status == 304 {
            State::Length(0)
        } else if chunked {
            State::ChunkSize
        } else if let Some(n) = content_length {
            State::Length(n)
        } else {
            State::UntilEof
        };
        Ok(())
    }
}

/// Index just past the blank line that ends the head, searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let nl = buf[i..].iter().position(|&b| b == b'\n')? + i;
        if buf[nl + 1..].starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if buf[nl + 1..].starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// A whole line including its '\n', if present.
fn take_line(buf: &[u8]) -> Result<Option<&[u8]>, String> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(&buf[..=i])),
        None if buf.len() > MAX_LINE => Err("chunk or trailer line too long".into()),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let hex_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if hex_end == 0 || hex_end > 15 {
        return Err("bad chunk size".into());
    }
    let digits = std::str::from_utf8(&line[..hex_end]).map_err(|_| "bad chunk size")?;
    u64::from_str_radix(digits, 16).map_err(|_| "bad chunk size".into())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes the way the connection does.
    fn run(input: &[u8], step: usize, head_request: bool) -> Result<Vec<Response>, String> {
        let mut p = Parser::new(head_request);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, prog) = p.feed(&buf)?;
                buf.drain(..used);
                match prog {
                    Progress::Done(r) => out.push(r),
                    Progress::NeedMore => break,
                }
            }
        }
        Ok(out)
    }

    const TWO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn length_and_chunked_any_split() {
        for step in 1..TWO.len() + 1 {
            let r = run(TWO, step, false).unwrap();
            assert_eq!(
                r,
                vec![
                    Response {
                        status: 200,
                        keep_alive: true
                    },
                    Response {
                        status: 404,
                        keep_alive: true
                    }
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn close_and_http10() {
        let r = run(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            7,
            false,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                keep_alive: false
            }]
        );
        let r = run(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 3, false).unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                keep_alive: false
            }]
        );
        let r = run(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
            3,
            false,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                keep_alive: true
            }]
        );
    }

    #[test]
    fn until_eof_interim_and_head() {
        let mut p = Parser::new(false);
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody until close";
        let (used, prog) = p.feed(input).unwrap();
        assert_eq!((used, prog), (input.len(), Progress::NeedMore));
        assert_eq!(
            p.eof().unwrap(),
            Response {
                status: 200,
                keep_alive: false
            }
        );
        // HEAD and 304: no body even with Content-Length.
        let r = run(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 5, true).unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 200,
                keep_alive: true
            }]
        );
        let r = run(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
            5,
            false,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![Response {
                status: 304,
                keep_alive: true
            }]
        );
    }

    #[test]
    fn errors() {
        assert!(run(b"HTTP/2 200 OK\r\n\r\n", 100, false).is_err());
        assert!(run(b"HTTP/1.1 20 OK\r\n\r\n", 100, false).is_err());
        assert!(run(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100, false).is_err());
        assert!(run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            100,
            false
        )
        .is_err());
        let mut p = Parser::new(false);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert!(p.eof().is_err());
    }
}
