//! One bounded HTTP/1.0 exchange over a blocking socket, for the threads
//! that fetch CRLs (`get`) and OCSP responses (`ocsp::fetch`), never a
//! worker: a deadline over the whole fetch (connect, request, every read)
//! and caps on the answer and its body. HTTP/1.0 is asked for so the server
//! frames the body by Content-Length or by closing, never chunked. Redirects
//! are not followed: the URL configured is the one used. `parse_response` is
//! the pure half, tested byte by byte.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Response heads larger than this are refused.
const MAX_HEAD: usize = 16 * 1024;

/// GETs `path` from `host:port` (a host without brackets); the body of a 200 response, at most `max_body` bytes, within
/// `timeout` in all. Name resolution uses the system resolver (not bounded
/// by `timeout`; it runs on the calling thread only).
pub fn get(
    host: &str,
    port: u16,
    path: &str,
    accept: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    let authority = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = if port == 80 {
        authority
    } else {
        format!("{authority}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: portcullis/{}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    exchange(
        host,
        port,
        request.as_bytes(),
        timeout,
        MAX_HEAD + max_body,
        max_body,
    )
}

/// Sends `request` (a whole HTTP/1.0 request) to `host:port` and returns the
/// body of a 200 answer: the answer at most `max_answer` bytes, its body at
/// most `max_body`, all within `timeout`.
pub fn exchange(
    host: &str,
    port: u16,
    request: &[u8],
    timeout: Duration,
    max_answer: usize,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} resolves to no address");
    let mut stream = None;
    for addr in addrs {
        if Instant::now() >= deadline {
            break;
        }
        // A connect interrupted by a signal is tried again (twice at most).
        let mut tries = 0;
        let connected = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 2 => tries += 1,
                other => break other,
            }
        };
        match connected {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("no complete answer within {timeout:?}")
        } else {
            format!("connection failed: {e}")
        }
    };
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io)?;
    stream.write_all(request).map_err(io)?;
    let mut data = Vec::with_capacity(8192);
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(io)?;
        let n = match stream.read(&mut buf) {
            // A signal landed during the read (seen at start-up): not an
            // answer, read again within the same deadline.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.map_err(io)?,
        };
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() > max_answer {
            return Err(format!("the answer is larger than {max_answer} bytes"));
        }
        // Content-Length reached: no need to wait for the close.
        if let Some(body) = complete_body(&data, max_body)? {
            return Ok(body.to_vec());
        }
    }
    parse_response(&data, max_body).map(<[u8]>::to_vec)
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("no complete answer in time".to_string())
    } else {
        Ok(left)
    }
}

/// The body once Content-Length bytes of it are in; None while incomplete
/// or when the body runs to the close.
fn complete_body(data: &[u8], max_body: usize) -> Result<Option<&[u8]>, String> {
    let Some((head_len, length)) = head(data, max_body)? else {
        return Ok(None);
    };
    match length {
        Some(len) if data.len() - head_len >= len => Ok(Some(&data[head_len..head_len + len])),
        _ => Ok(None),
    }
}

/// (head length, Content-Length) once the whole head is in.
fn head(data: &[u8], max_body: usize) -> Result<Option<(usize, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if data.len() > MAX_HEAD => {
            return Err(format!("response head larger than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        let reason = resp.reason.unwrap_or("");
        return Err(format!("HTTP {code} {reason}").trim_end().to_string());
    }
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked answer to an HTTP/1.0 request".to_string());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("a Content-Length that is not a number")?;
            if length.is_some_and(|l| l != v) {
                return Err("two different Content-Length values".to_string());
            }
            if v > max_body {
                return Err(format!("the answer is larger than {max_body} bytes"));
            }
            length = Some(v);
        }
    }
    Ok(Some((head_len, length)))
}

/// The body of a complete response (the connection has closed): a 200 with
/// its whole Content-Length, or a body ended by the close.
pub fn parse_response(data: &[u8], max_body: usize) -> Result<&[u8], String> {
    let (head_len, length) =
        head(data, max_body)?.ok_or("the connection closed before the response head ended")?;
    let body = &data[head_len..];
    match length {
        Some(len) if body.len() < len => Err(format!(
            "the connection closed after {} of {len} body bytes",
            body.len()
        )),
        Some(len) => Ok(&body[..len]),
        None if body.len() > max_body => Err(format!("the answer is larger than {max_body} bytes")),
        None => Ok(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_and_by_close() {
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(r, 10).unwrap(), b"abc");
        assert_eq!(complete_body(r, 10).unwrap(), Some(&b"abc"[..]));
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nabcdef";
        assert_eq!(parse_response(r, 10).unwrap(), b"abcdef");
        assert_eq!(complete_body(r, 10).unwrap(), None);
        assert_eq!(
            complete_body(b"HTTP/1.0 200 OK\r\nContent-Le", 10).unwrap(),
            None
        );
    }

    #[test]
    fn refusals() {
        let e = |r: &[u8]| parse_response(r, 4).unwrap_err();
        assert_eq!(
            e(b"HTTP/1.0 404 File not found\r\n\r\n"),
            "HTTP 404 File not found"
        );
        assert!(e(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n").contains("larger than 4"));
        assert!(e(b"HTTP/1.0 200 OK\r\n\r\n12345").contains("larger than 4"));
        assert!(e(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nab").contains("after 2 of 3"));
        assert!(e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").contains("chunked"));
        assert!(
            e(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .contains("two different")
        );
        assert!(e(b"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\n").contains("not a number"));
        assert!(e(b"HTTP/1.0 200 OK\r\n").contains("closed before"));
        assert!(e(b"SSH-2.0-OpenSSH\r\n\r\n").contains("not an HTTP response"));
    }

    /// The OCSP responder's framing cases (once in `ocsp::fetch`, before
    /// both fetchers shared this parser).
    #[test]
    fn content_length_framing_byte_by_byte() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(complete_body(a, 64).unwrap(), Some(&b"abc"[..]));
        // byte by byte: nothing until the last body byte
        for cut in 0..a.len() {
            assert_eq!(complete_body(&a[..cut], 64).unwrap(), None, "cut {cut}");
        }
        assert!(parse_response(&a[..a.len() - 1], 64)
            .unwrap_err()
            .contains("after 2 of 3"));
        // extra bytes past the length are not part of the body
        let mut more = a.to_vec();
        more.extend_from_slice(b"zz");
        assert_eq!(complete_body(&more, 64).unwrap(), Some(&b"abc"[..]));
    }

    #[test]
    fn close_delimited_and_refusals_mid_stream() {
        let a = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert_eq!(complete_body(a, 64).unwrap(), None);
        assert_eq!(parse_response(a, 64).unwrap(), b"xyz");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", 64)
            .unwrap_err()
            .contains("head"));
        let e = complete_body(b"HTTP/1.1 404 Not Found\r\n\r\n", 64).unwrap_err();
        assert!(e.contains("404 Not Found"), "{e}");
        assert!(
            complete_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 64).is_err()
        );
        assert!(complete_body(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            64
        )
        .is_err());
        assert!(complete_body(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 64).is_err());
        assert!(complete_body(b"garbage\r\n\r\n", 64).is_err());
    }
}
