//! etcd's v3 HTTP/JSON gateway, as bytes: the requests we send, the response
//! heads and the JSON messages we read back (keys and values base64, 64-bit
//! numbers as strings). Pure: no I/O, so it is tested byte by byte; the
//! sockets are in `etcd`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// One HTTP/1.1 POST of a JSON body (`Connection: close` for unary calls:
/// one connection per call keeps the client trivially correct, and a config
/// change is rare).
pub fn post(host: &str, path: &str, body: &Value, keep_open: bool) -> Vec<u8> {
    let body = body.to_string();
    let connection = if keep_open { "keep-alive" } else { "close" };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, CRLFCRLF included.
    pub len: usize,
    pub framing: Framing,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes.
    Close,
}

/// Parses a response head from the start of `buf`; Ok(None) = incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response head from etcd: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut framing = Framing::Close;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            } else {
                return Err("etcd answered with a transfer-encoding other than chunked".into());
            }
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or("etcd answered with a bad Content-Length")?;
            framing = Framing::Length(n);
        }
    }
    Ok(Some(Head {
        status,
        len,
        framing,
    }))
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's `range_end`: the prefix with its last byte plus one).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): etcd's "\0" means "to the end of the keyspace".
    vec![0]
}

pub fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A range over every key under `prefix`, at `revision` (None = latest).
pub fn range_request(prefix: &str, revision: Option<i64>) -> Value {
    let mut v = json!({
        "key": b64(prefix.as_bytes()),
        "range_end": b64(&prefix_end(prefix.as_bytes())),
    });
    if let Some(r) = revision {
        v["revision"] = json!(r.to_string());
    }
    v
}

/// A watch on every key under `prefix` from `start_revision` on.
pub fn watch_request(prefix: &str, start_revision: i64) -> Value {
    json!({"create_request": {
        "key": b64(prefix.as_bytes()),
        "range_end": b64(&prefix_end(prefix.as_bytes())),
        "start_revision": start_revision.to_string(),
    }})
}

/// One transaction that makes the keys under `prefix` exactly `puts`:
/// every key put, every other key read at `read_revision` deleted, and only
/// if nothing under the prefix changed since that read.
pub fn replace_txn(
    prefix: &str,
    read_revision: i64,
    puts: &[(String, Vec<u8>)],
    deletes: &[String],
) -> Value {
    let mut ops = Vec::new();
    for (k, v) in puts {
        ops.push(json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}}));
    }
    for k in deletes {
        ops.push(json!({"request_delete_range": {"key": b64(k.as_bytes())}}));
    }
    json!({
        "compare": [{
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "target": "MOD",
            "result": "LESS",
            "mod_revision": (read_revision + 1).to_string(),
        }],
        "success": ops,
    })
}

/// etcd's 64-bit integers arrive as JSON strings (or, rarely, numbers).
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: i64,
}

#[derive(Debug, Deserialize)]
pub struct RawKv {
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
}

/// A key and its value, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RangeResult {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

fn decode_kv(raw: RawKv) -> Result<Kv, String> {
    let key = BASE64
        .decode(&raw.key)
        .map_err(|e| format!("etcd sent a key that is not base64: {e}"))?;
    let key =
        String::from_utf8(key).map_err(|_| "etcd sent a key that is not UTF-8".to_string())?;
    let value = BASE64
        .decode(&raw.value)
        .map_err(|e| format!("etcd sent a value that is not base64 (key {key}): {e}"))?;
    Ok(Kv {
        key,
        value,
        mod_revision: raw.mod_revision,
    })
}

pub fn parse_range(body: &[u8]) -> Result<RangeResult, String> {
    let raw: RawRange =
        serde_json::from_slice(body).map_err(|e| format!("bad range response from etcd: {e}"))?;
    Ok(RangeResult {
        revision: raw.header.revision,
        kvs: raw
            .kvs
            .into_iter()
            .map(decode_kv)
            .collect::<Result<_, _>>()?,
    })
}

/// A txn's outcome: did the compare hold, and the revision it made.
pub fn parse_txn(body: &[u8]) -> Result<(bool, i64), String> {
    #[derive(Deserialize)]
    struct RawTxn {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        succeeded: bool,
    }
    let raw: RawTxn =
        serde_json::from_slice(body).map_err(|e| format!("bad txn response from etcd: {e}"))?;
    Ok((raw.succeeded, raw.header.revision))
}

/// A gateway error body: `{"error": ..., "code": N}` (gRPC status codes).
#[derive(Debug, PartialEq, Eq)]
pub struct ServerError {
    pub code: i64,
    pub message: String,
}

/// gRPC OUT_OF_RANGE: a revision that has been compacted away.
pub const CODE_OUT_OF_RANGE: i64 = 11;

pub fn parse_error(body: &[u8]) -> ServerError {
    #[derive(Deserialize)]
    struct RawError {
        #[serde(default)]
        error: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        code: i64,
    }
    match serde_json::from_slice::<RawError>(body) {
        Ok(e) => ServerError {
            code: e.code,
            message: if e.message.is_empty() {
                e.error
            } else {
                e.message
            },
        },
        Err(_) => ServerError {
            code: 0,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// One message of a watch stream.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchMessage {
    Created {
        revision: i64,
    },
    /// Keys under the prefix changed; `revision` is the newest among them.
    Changed {
        revision: i64,
    },
    /// The watch started before `compact_revision`, which etcd no longer has.
    Compacted {
        compact_revision: i64,
    },
    /// Canceled for another reason.
    Canceled {
        reason: String,
    },
    /// A progress notification or an empty response.
    Progress {
        revision: i64,
    },
    /// The gateway's own error (`{"error": ...}`).
    Error(ServerError),
}

#[derive(Deserialize)]
struct RawWatch {
    result: Option<RawWatchResult>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct RawWatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    kv: Option<RawKv>,
}

/// Splits complete JSON messages off the front of `buf` (the de-chunked
/// watch stream), returning them and how many bytes they used; a message
/// cut short stays in `buf` for the next read.
pub fn split_watch_messages(buf: &[u8]) -> Result<(Vec<WatchMessage>, usize), String> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<RawWatch>();
    let mut used = 0;
    loop {
        match stream.next() {
            None => break,
            Some(Ok(raw)) => {
                used = stream.byte_offset();
                out.push(watch_message(raw));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Err(format!("bad watch message from etcd: {e}")),
        }
    }
    Ok((out, used))
}

fn watch_message(raw: RawWatch) -> WatchMessage {
    if let Some(err) = raw.error {
        return WatchMessage::Error(parse_error(err.to_string().as_bytes()));
    }
    let Some(r) = raw.result else {
        return WatchMessage::Progress { revision: 0 };
    };
    if r.canceled {
        if r.compact_revision > 0 {
            return WatchMessage::Compacted {
                compact_revision: r.compact_revision,
            };
        }
        return WatchMessage::Canceled {
            reason: r.cancel_reason,
        };
    }
    if r.created {
        return WatchMessage::Created {
            revision: r.header.revision,
        };
    }
    let newest = r
        .events
        .iter()
        .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
        .max();
    match newest {
        // A delete event carries the key with mod_revision = the deleting
        // revision; either way the header revision is at least as new.
        Some(rev) => WatchMessage::Changed {
            revision: rev.max(r.header.revision),
        },
        None if !r.events.is_empty() => WatchMessage::Changed {
            revision: r.header.revision,
        },
        None => WatchMessage::Progress {
            revision: r.header.revision,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/portcullis/"), b"/portcullis0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn post_is_one_http11_request() {
        let req = post(
            "127.0.0.1:2379",
            "/v3/kv/range",
            &json!({"key": "YQ=="}),
            false,
        );
        let text = String::from_utf8(req).unwrap();
        assert_eq!(
            text,
            "POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"key\":\"YQ==\"}"
        );
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.len, h.framing), (200, 39, Framing::Length(12)));
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_head(b"\x16\x03\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn range_as_etcd_3_4_writes_it() {
        // Copied from etcd 3.4.23's gateway; "count" and "kvs" vanish when empty.
        let body = br#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"},"kvs":[{"key":"L3AvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"aGVsbG8="}],"count":"1"}"#;
        let r = parse_range(body).unwrap();
        assert_eq!(r.revision, 2);
        assert_eq!(
            r.kvs,
            vec![Kv {
                key: "/p/a".into(),
                value: b"hello".to_vec(),
                mod_revision: 2
            }]
        );
        let empty = parse_range(br#"{"header":{"revision":"5","raft_term":"2"}}"#).unwrap();
        assert_eq!((empty.revision, empty.kvs.len()), (5, 0));
        assert!(parse_range(br#"{"header":{"revision":"x"}}"#).is_err());
        assert!(parse_range(br#"{"kvs":[{"key":"!!"}]}"#).is_err());
    }

    #[test]
    fn txn_outcomes() {
        assert_eq!(
            parse_txn(br#"{"header":{"revision":"7"},"succeeded":true,"responses":[]}"#).unwrap(),
            (true, 7)
        );
        assert_eq!(
            parse_txn(br#"{"header":{"revision":"7"}}"#).unwrap(),
            (false, 7)
        );
    }

    #[test]
    fn errors() {
        let e = parse_error(br#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#);
        assert_eq!(e.code, CODE_OUT_OF_RANGE);
        assert!(e.message.contains("compacted"));
        assert_eq!(parse_error(b"<html>").message, "<html>");
    }

    #[test]
    fn watch_stream_split_anywhere() {
        let stream = concat!(
            r#"{"result":{"header":{"revision":"2"},"created":true}}"#, "\n",
            r#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"L3AvYQ==","mod_revision":"3","value":"aA=="}},{"type":"DELETE","kv":{"key":"L3AvYg==","mod_revision":"4"}}]}}"#, "\n",
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"}}"#, "\n",
        ).as_bytes();
        let want = vec![
            WatchMessage::Created { revision: 2 },
            WatchMessage::Changed { revision: 4 },
            WatchMessage::Compacted {
                compact_revision: 4,
            },
        ];
        // Fed in two pieces split at every byte, the messages come out the same.
        for cut in 0..stream.len() {
            let mut buf = stream[..cut].to_vec();
            let (mut got, used) = split_watch_messages(&buf).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&stream[cut..]);
            let (rest, used) = split_watch_messages(&buf).unwrap();
            got.extend(rest);
            assert_eq!(got, want, "cut at {cut}");
            assert!(buf[used..].iter().all(|b| b.is_ascii_whitespace()));
        }
        assert!(split_watch_messages(b"{\"result\":}").is_err());
        let (m, _) =
            split_watch_messages(br#"{"error":{"grpc_code":14,"message":"unavailable"}}"#).unwrap();
        assert!(matches!(&m[0], WatchMessage::Error(e) if e.message == "unavailable"));
        let (m, _) = split_watch_messages(
            br#"{"result":{"header":{"revision":"9"},"canceled":true,"cancel_reason":"bad"}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            vec![WatchMessage::Canceled {
                reason: "bad".into()
            }]
        );
    }

    #[test]
    fn requests_carry_base64_keys_and_string_revisions() {
        let r = range_request("/pc/", Some(12));
        assert_eq!(
            r,
            json!({"key": "L3BjLw==", "range_end": "L3BjMA==", "revision": "12"})
        );
        let w = watch_request("/pc/", 13);
        assert_eq!(w["create_request"]["start_revision"], "13");
        let t = replace_txn(
            "/pc/",
            12,
            &[("/pc/config.toml".into(), b"x".to_vec())],
            &["/pc/files/old.pem".into()],
        );
        assert_eq!(t["compare"][0]["mod_revision"], "13");
        assert_eq!(t["compare"][0]["result"], "LESS");
        assert_eq!(t["success"][0]["request_put"]["value"], "eA==");
        assert_eq!(
            t["success"][1]["request_delete_range"]["key"],
            b64(b"/pc/files/old.pem")
        );
    }
}
