//! The one piece of I/O in OCSP stapling: POST a request to the responder
//! over plain HTTP/1.0 and read its answer, bounded in time and size. Runs
//! on the stapling thread only (blocking std sockets), never on a worker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::url::HttpUrl;

/// Bounds of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connecting (per address) plus sending plus reading the whole answer.
    pub deadline: Duration,
    /// Head and body together.
    pub max_bytes: usize,
}

/// Responses are a few KiB (a signature, perhaps a responder certificate).
pub const DEFAULT_LIMITS: Limits = Limits {
    deadline: Duration::from_secs(10),
    max_bytes: 64 * 1024,
};

/// POSTs `request` (DER) to `url` and returns the response body.
pub fn post(url: &HttpUrl, request: &[u8], limits: Limits) -> Result<Vec<u8>, String> {
    let start = Instant::now();
    let left = || limits.deadline.saturating_sub(start.elapsed());
    // Name resolution has no timeout of its own (getaddrinfo); it runs on
    // this thread only, so a slow resolver delays stapling, not handshakes.
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} resolves to no address", url.host);
    let mut stream = None;
    for addr in addrs {
        let budget = left();
        if budget.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, budget) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let head = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\nAccept: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority(),
        request.len()
    );
    let timeout = |s: &TcpStream| {
        let t = left().max(Duration::from_millis(1));
        s.set_write_timeout(Some(t))
            .and_then(|_| s.set_read_timeout(Some(t)))
    };
    timeout(&stream).map_err(|e| e.to_string())?;
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(request))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if left().is_zero() {
            return Err(format!("no complete answer within {:?}", limits.deadline));
        }
        timeout(&stream).map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > limits.max_bytes {
                    return Err(format!(
                        "the answer is larger than {} bytes",
                        limits.max_bytes
                    ));
                }
                if let Some(body) = complete_body(&answer)? {
                    return Ok(body);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    match complete_body(&answer)? {
        Some(body) => Ok(body),
        None => body_to_close(&answer),
    }
}

/// The body once the head and a Content-Length's worth of bytes are in;
/// None while more is needed (or the body is delimited by the close).
pub fn complete_body(answer: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some((head_len, length)) = head(answer)? else {
        return Ok(None);
    };
    let Some(length) = length else {
        return Ok(None);
    };
    let body = &answer[head_len..];
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some(body[..length].to_vec()))
}

/// The body of an answer that ended with the connection.
pub fn body_to_close(answer: &[u8]) -> Result<Vec<u8>, String> {
    match head(answer)? {
        None => Err("the connection closed before a complete HTTP head".into()),
        Some((_, Some(length))) => Err(format!(
            "the connection closed before the {length}-byte body was complete"
        )),
        Some((head_len, None)) => Ok(answer[head_len..].to_vec()),
    }
}

/// (head length, Content-Length) once the head is complete and status 200.
fn head(answer: &[u8]) -> Result<Option<(usize, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the answer is not HTTP: {e}")),
    };
    let code = response.code.unwrap_or(0);
    if code != 200 {
        return Err(format!(
            "the responder answered HTTP {code} {}",
            response.reason.unwrap_or("")
        ));
    }
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a transfer-encoded answer to an HTTP/1.0 request".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("a bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        }
    }
    Ok(Some((head_len, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_framing() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(complete_body(a).unwrap().unwrap(), b"abc");
        // byte by byte: nothing until the last body byte
        for cut in 0..a.len() {
            assert_eq!(complete_body(&a[..cut]).unwrap(), None, "cut {cut}");
        }
        assert!(body_to_close(&a[..a.len() - 1])
            .unwrap_err()
            .contains("3-byte body"));
        // extra bytes past the length are not part of the body
        let mut more = a.to_vec();
        more.extend_from_slice(b"zz");
        assert_eq!(complete_body(&more).unwrap().unwrap(), b"abc");
    }

    #[test]
    fn close_delimited_and_refusals() {
        let a = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert_eq!(complete_body(a).unwrap(), None);
        assert_eq!(body_to_close(a).unwrap(), b"xyz");
        assert!(body_to_close(b"HTTP/1.1 200 OK\r\n")
            .unwrap_err()
            .contains("head"));
        let e = complete_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err();
        assert!(e.contains("404 Not Found"), "{e}");
        assert!(complete_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(complete_body(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
        assert!(complete_body(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(complete_body(b"garbage\r\n\r\n").is_err());
    }
}
