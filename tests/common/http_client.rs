//! A minimal HTTP/1.1 client over a plain or TLS stream (`HttpConn`), written
//! for tests that need control a library client would hide: hand-built
//! requests (`req`, `get_req`), responses read one at a time with their
//! framing reported (`Response`), and whether and how the gateway closed the
//! connection (`wait_closed`, `read_until_close`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::tls_client::{rustls_error, TlsStream};
use super::{assert_error_json, parse_json};

pub trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn json(&self) -> Value {
        parse_json(&self.body)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `Connection: close` present (token match, case-insensitive).
    pub fn connection_close(&self) -> bool {
        self.headers_named("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_error_json(&self.body, status, code);
    }
}

#[derive(Debug)]
pub enum Closed {
    /// Orderly EOF, close_notify, or reset: the connection is gone.
    Eof,
    /// Nothing happened before the deadline.
    StillOpen,
    /// Unexpected bytes arrived.
    Data(Vec<u8>),
}

fn is_closed_err(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    ) || rustls_error(e).is_some()
}

fn is_timeout_err(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct HttpConn<S: Transport> {
    pub s: S,
    buf: Vec<u8>,
    eof: bool,
}

impl<S: Transport> HttpConn<S> {
    pub fn new(s: S) -> Self {
        HttpConn {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.s.tcp().set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.s.write_all(data)?;
        self.s.flush()
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF (incl. TLS EOF
    /// without close_notify).
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(self.buf.len()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in line"));
            }
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {} body bytes", self.buf.len(), n),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response (1xx included). `head_request`: no body expected.
    pub fn read_response_for(&mut self, head_request: bool) -> io::Result<Response> {
        // status line (skip nothing: a blank line here is a protocol error)
        let status_line = match self.read_line() {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ))
            }
            Err(e) => return Err(e),
        };
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        }
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let l = self.read_line()?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad header line {l:?}"))
            })?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let te = resp
            .header("transfer-encoding")
            .map(|s| s.to_ascii_lowercase());
        if te
            .as_deref()
            .map(|t| t.contains("chunked"))
            .unwrap_or(false)
        {
            resp.chunked = true;
            let mut body = Vec::new();
            loop {
                let line = self.read_line()?;
                let size_str = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_str, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // trailers
                    loop {
                        if self.read_line()?.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                body.extend(self.read_exact_buf(size)?);
                let crlf = self.read_exact_buf(2)?;
                if crlf != b"\r\n" {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "missing CRLF after chunk",
                    ));
                }
            }
            resp.body = body;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad content-length {cl:?}"),
                )
            })?;
            resp.body = self.read_exact_buf(n)?;
        } else {
            // read to EOF
            while self.fill()? != 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_for(false)
    }

    /// Reads responses until a final (non-1xx) one.
    pub fn read_final(&mut self) -> io::Result<Response> {
        loop {
            let r = self.read_response()?;
            if !(100..200).contains(&r.status) {
                return Ok(r);
            }
        }
    }

    pub fn request(&mut self, req: &[u8]) -> io::Result<Response> {
        self.send(req)?;
        self.read_final()
    }

    /// GET path with Host: localhost and extra header lines ("K: V").
    pub fn get(&mut self, path: &str, headers: &[&str]) -> io::Result<Response> {
        self.request(&get_req(path, headers))
    }

    /// Waits (up to `timeout`) for the peer to close the connection.
    pub fn wait_closed(&mut self, timeout: Duration) -> Closed {
        if !self.buf.is_empty() {
            return Closed::Data(std::mem::take(&mut self.buf));
        }
        if self.eof {
            return Closed::Eof;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Closed::StillOpen;
            }
            self.set_read_timeout(left.max(Duration::from_millis(10)));
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp) {
                Ok(0) => return Closed::Eof,
                Ok(n) => return Closed::Data(tmp[..n].to_vec()),
                Err(e) if is_timeout_err(&e) => continue,
                Err(e) if is_closed_err(&e) => return Closed::Eof,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("unexpected read error while waiting for close: {e:?}"),
            }
        }
    }

    /// Asserts the connection is closed by the peer within 5 s.
    pub fn assert_closed(&mut self, what: &str) {
        match self.wait_closed(Duration::from_secs(5)) {
            Closed::Eof => {}
            other => panic!("{what}: expected the gateway to close the connection, got {other:?}"),
        }
    }

    /// Reads everything until EOF / reset / deadline; returns (bytes, closed).
    pub fn read_until_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let mut all = std::mem::take(&mut self.buf);
        if self.eof {
            return (all, true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (all, false);
            }
            self.set_read_timeout(left.max(Duration::from_millis(10)));
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return (all, true),
                Ok(n) => all.extend_from_slice(&tmp[..n]),
                Err(e) if is_timeout_err(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (all, true),
            }
        }
    }

    /// Pushes bytes back in front of the read buffer (after read_until_close).
    pub fn unread(&mut self, data: Vec<u8>) {
        let mut d = data;
        d.extend_from_slice(&self.buf);
        self.buf = d;
    }
}

/// Builds "GET path HTTP/1.1\r\nHost: localhost\r\n<headers>\r\n".
pub fn get_req(path: &str, headers: &[&str]) -> Vec<u8> {
    req("GET", path, headers, b"")
}

/// A request with Host: localhost, the given header lines, and (if non-empty)
/// a Content-Length body.
pub fn req(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    if !body.is_empty() {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    let mut v = s.into_bytes();
    v.extend_from_slice(body);
    v
}

/// Parses a complete response held in `bytes` (e.g. from read_until_close).
pub fn parse_response_bytes(bytes: &[u8]) -> io::Result<Response> {
    let text = bytes;
    let end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no complete head"))?;
    let head = String::from_utf8_lossy(&text[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let sl = lines.next().unwrap_or("");
    let mut parts = sl.splitn(3, ' ');
    let _v = parts.next();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {sl:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = text[end + 4..].to_vec();
    if let Some(cl) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        if let Ok(n) = cl.1.parse::<usize>() {
            body.truncate(n);
        }
    }
    Ok(Response {
        status,
        reason,
        headers,
        body,
        chunked: false,
    })
}
