//! Responses the gateway generates itself: status line, JSON body, exact
//! Content-Length. Written by hand so the hot error path needs no serde and
//! no allocation beyond the caller's buffer.

use crate::http::head;

/// Append a complete gateway-generated error response with the JSON body
/// `{"error":{"status":N,"code":"...","message":"..."}}`.
///
/// `extra_headers` are whole "Name: value" lines without CRLF; a line that
/// contains CR or LF is dropped, so a caller that builds one from request data
/// cannot inject headers.
pub fn write_error_response(
    status: u16,
    code: &str,
    message: &str,
    close: bool,
    extra_headers: &[&str],
    out: &mut Vec<u8>,
) {
    write_error(status, code, message, close, extra_headers, true, out);
}

/// The same response to a HEAD request: the head, with the Content-Length a
/// GET would get (RFC 9110 section 9.3.2), and no body. A body after the head
/// of a HEAD response would be read as the next response on the connection.
pub fn write_error_response_head(
    status: u16,
    code: &str,
    message: &str,
    close: bool,
    extra_headers: &[&str],
    out: &mut Vec<u8>,
) {
    write_error(status, code, message, close, extra_headers, false, out);
}

/// Appends the JSON body alone, `{"error":{"status":N,"code":"...","message":"..."}}`
/// (an HTTP/2 stream sends it as DATA after its own head).
pub fn write_error_body(status: u16, code: &str, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(OPEN.as_bytes());
    head::put_decimal(out, u64::from(status));
    out.extend_from_slice(CODE.as_bytes());
    put_json_escaped(code, out);
    out.extend_from_slice(MESSAGE.as_bytes());
    put_json_escaped(message, out);
    out.extend_from_slice(CLOSE.as_bytes());
}

// The body is {OPEN}status{CODE}code{MESSAGE}message{CLOSE}.
const OPEN: &str = "{\"error\":{\"status\":";
const CODE: &str = ",\"code\":\"";
const MESSAGE: &str = "\",\"message\":\"";
const CLOSE: &str = "\"}}";

fn write_error(
    status: u16,
    code: &str,
    message: &str,
    close: bool,
    extra_headers: &[&str],
    with_body: bool,
    out: &mut Vec<u8>,
) {
    let body_len = OPEN.len()
        + decimal_len(u64::from(status))
        + CODE.len()
        + json_escaped_len(code)
        + MESSAGE.len()
        + json_escaped_len(message)
        + CLOSE.len();

    out.extend_from_slice(b"HTTP/1.1 ");
    head::put_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    head::put_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for line in extra_headers {
        if !line.bytes().any(|b| b == b'\r' || b == b'\n') {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    if with_body {
        write_error_body(status, code, message, out);
    }
}

/// Reason phrase for a status the gateway itself generates (RFC 9110 wording).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// How `put_json_escaped` writes one char: `Some` for an escape sequence.
fn json_escape(c: char) -> Option<&'static str> {
    match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        '\t' => Some("\\t"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        _ => None,
    }
}

fn json_escaped_len(s: &str) -> usize {
    s.chars()
        .map(|c| match json_escape(c) {
            Some(e) => e.len(),
            None if c < ' ' => 6, // \u00XX
            None => c.len_utf8(),
        })
        .sum()
}

fn put_json_escaped(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        match json_escape(c) {
            Some(e) => out.extend_from_slice(e.as_bytes()),
            None if c < ' ' => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            None => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response() {
        let mut out = Vec::new();
        write_error_response(
            413,
            "PCS.4130",
            "body \"too\" big\\\n\u{1}é",
            true,
            &["Retry-After: 1", "X: a\r\nInjected: 1"],
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nContent-Length: 83\r\n\
             Connection: close\r\nRetry-After: 1"
        );
        assert_eq!(
            body,
            r#"{"error":{"status":413,"code":"PCS.4130","message":"body \"too\" big\\\n\u0001é"}}"#
        );
        assert_eq!(body.len(), 83);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["message"], "body \"too\" big\\\n\u{1}é");
        assert_eq!(json["error"]["status"], 413);
        assert_eq!(json["error"]["code"], "PCS.4130");

        let mut out = Vec::new();
        write_error_response(502, "PCS.5020", "bad gateway", false, &[], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Connection"));
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(999), "Unknown");
    }

    #[test]
    fn error_response_to_head_is_the_same_head_without_the_body() {
        let (mut full, mut head) = (Vec::new(), Vec::new());
        let args = (404, "PCS.4040", "no route", false, &["Allow: GET"][..]);
        write_error_response(args.0, args.1, args.2, args.3, args.4, &mut full);
        write_error_response_head(args.0, args.1, args.2, args.3, args.4, &mut head);
        let text = String::from_utf8(full).unwrap();
        let (full_head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!body.is_empty());
        assert_eq!(
            String::from_utf8(head).unwrap(),
            format!("{full_head}\r\n\r\n")
        );
    }

    #[test]
    fn error_body_alone_is_the_response_body() {
        let mut full = Vec::new();
        write_error_response(421, "PCS.4210", "wrong \"site\"", false, &[], &mut full);
        let mut body = Vec::new();
        write_error_body(421, "PCS.4210", "wrong \"site\"", &mut body);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"error":{"status":421,"code":"PCS.4210","message":"wrong \"site\""}}"#
        );
        assert!(full.ends_with(&body));
    }
}
