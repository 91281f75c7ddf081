//! A small blocking etcd v3 client over its HTTP/JSON gateway: range, txn
//! and a streaming watch, over plain TCP or rustls (TLS and mTLS to etcd).
//!
//! Why not an etcd crate: the maintained ones (etcd-client) are gRPC over
//! tonic, which brings tokio, hyper and prost into a gateway whose request
//! path is monoio only. Three calls over HTTP/1.1 with JSON need none of it,
//! and this client runs on one dedicated std thread (`sync`) and in the CLI,
//! never on a worker. The bytes are built and parsed in `wire`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::Value;

use super::wire::{self, Framing, RangeResult, WatchMessage};
use crate::config::{ClusterSettings, Endpoint, IdentitySource};
use crate::http::chunked::ChunkedDecoder;
use crate::tls::client::{client_config, UpstreamTlsSettings};
use crate::tls::material;

/// The largest unary response read (a whole config with its certificates).
const MAX_BODY: usize = 64 << 20;

/// Why a call failed.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint answered (connect, TLS, I/O, or a 5xx): retry later.
    Unavailable(String),
    /// The revision asked for has been compacted away.
    Compacted(String),
    /// etcd answered with an error.
    Server(wire::ServerError),
    /// etcd answered with bytes we cannot read.
    Protocol(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(m) => write!(f, "etcd unavailable: {m}"),
            EtcdError::Compacted(m) => write!(f, "revision compacted: {m}"),
            EtcdError::Server(e) => write!(f, "etcd refused: {} (code {})", e.message, e.code),
            EtcdError::Protocol(m) => write!(f, "etcd protocol error: {m}"),
        }
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

pub struct Client {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<ClientConfig>>,
    dial_timeout: Duration,
    request_timeout: Duration,
    /// The endpoint that answered last: tried first next time.
    preferred: usize,
}

impl Client {
    /// Loads the TLS material (CA, client certificate) once.
    pub fn new(settings: &ClusterSettings) -> Result<Client, String> {
        let tls = match &settings.tls {
            None => None,
            Some(t) => {
                let roots = material::load_ca_bundle(std::slice::from_ref(&t.ca))
                    .map_err(|e| format!("cluster.ca: {e}"))?;
                let client_identity = match &t.identity {
                    None => None,
                    Some((cert, key)) => {
                        let id = material::load_identity(&IdentitySource::Pem {
                            certificate: cert.clone(),
                            private_key: key.clone(),
                        })
                        .map_err(|e| format!("cluster.cert/key: {e}"))?;
                        Some((id.chain, id.key))
                    }
                };
                Some(
                    client_config(UpstreamTlsSettings {
                        roots,
                        client_identity,
                        verify_hostname: true,
                    })
                    .map_err(|e| format!("TLS to etcd: {e}"))?,
                )
            }
        };
        Ok(Client {
            endpoints: settings.endpoints.clone(),
            tls,
            dial_timeout: settings.dial_timeout,
            request_timeout: settings.request_timeout,
            preferred: 0,
        })
    }

    fn connect(&self, ep: &Endpoint) -> Result<Conn, String> {
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("{ep}: cannot resolve: {e}"))?
            .collect();
        let mut last = format!("{ep}: no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.dial_timeout) {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    tcp.set_read_timeout(Some(self.request_timeout))
                        .and_then(|_| tcp.set_write_timeout(Some(self.request_timeout)))
                        .map_err(|e| format!("{ep}: {e}"))?;
                    return match (&self.tls, ep.tls) {
                        (Some(cfg), true) => {
                            let name = ServerName::try_from(ep.host.clone())
                                .map_err(|e| format!("{ep}: not a TLS server name: {e}"))?;
                            let conn = ClientConnection::new(cfg.clone(), name)
                                .map_err(|e| format!("{ep}: TLS: {e}"))?;
                            let mut s = StreamOwned::new(conn, tcp);
                            // Finish the handshake now so a refused certificate
                            // is reported as such, not as a failed write.
                            let deadline = Instant::now() + self.dial_timeout;
                            while s.conn.is_handshaking() {
                                if Instant::now() > deadline {
                                    return Err(format!("{ep}: TLS handshake timed out"));
                                }
                                s.conn
                                    .complete_io(&mut s.sock)
                                    .map_err(|e| format!("{ep}: TLS handshake: {e}"))?;
                            }
                            Ok(Conn::Tls(Box::new(s)))
                        }
                        (None, false) => Ok(Conn::Plain(tcp)),
                        _ => Err(format!("{ep}: scheme and cluster TLS settings disagree")),
                    };
                }
                Err(e) => last = format!("{ep} ({addr}): {e}"),
            }
        }
        Err(last)
    }

    /// Sends one POST to the first endpoint that takes it; the connection
    /// and the response head.
    fn open(&mut self, path: &str, body: &Value) -> Result<(Conn, Vec<u8>, wire::Head), EtcdError> {
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (self.preferred + i) % n;
            let ep = self.endpoints[idx].clone();
            match self.try_open(&ep, path, body) {
                Ok((conn, buf, head)) if head.status < 500 => {
                    self.preferred = idx;
                    return Ok((conn, buf, head));
                }
                Ok((_, buf, head)) => failures.push(format!(
                    "{ep}: HTTP {}: {}",
                    head.status,
                    wire::parse_error(&buf[head.len.min(buf.len())..]).message
                )),
                Err(e) => failures.push(e),
            }
        }
        Err(EtcdError::Unavailable(failures.join("; ")))
    }

    fn try_open(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &Value,
    ) -> Result<(Conn, Vec<u8>, wire::Head), String> {
        let mut conn = self.connect(ep)?;
        let host = format!("{}:{}", ep.host, ep.port);
        let keep_open = path == "/v3/watch";
        conn.write_all(&wire::post(&host, path, body, keep_open))
            .and_then(|_| conn.flush())
            .map_err(|e| format!("{ep}: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if let Some(head) = wire::parse_head(&buf).map_err(|e| format!("{ep}: {e}"))? {
                return Ok((conn, buf, head));
            }
            if buf.len() > 64 * 1024 {
                return Err(format!("{ep}: response head too large"));
            }
            read_more(&mut conn, &mut buf).map_err(|e| format!("{ep}: {e}"))?;
        }
    }

    /// One unary call: the response body of a 200, or the error.
    fn call(&mut self, path: &str, body: &Value) -> Result<Vec<u8>, EtcdError> {
        let (mut conn, mut buf, head) = self.open(path, body)?;
        let body = read_body(&mut conn, &mut buf, &head).map_err(EtcdError::Unavailable)?;
        if head.status != 200 {
            let err = wire::parse_error(&body);
            if err.code == wire::CODE_OUT_OF_RANGE && err.message.contains("compacted") {
                return Err(EtcdError::Compacted(err.message));
            }
            return Err(EtcdError::Server(err));
        }
        Ok(body)
    }

    /// Every key under `prefix`, at `revision` (None = latest).
    pub fn range(&mut self, prefix: &str, revision: Option<i64>) -> Result<RangeResult, EtcdError> {
        let body = self.call("/v3/kv/range", &wire::range_request(prefix, revision))?;
        wire::parse_range(&body).map_err(EtcdError::Protocol)
    }

    /// A transaction (`wire::replace_txn`): whether its compare held, and the revision.
    pub fn txn(&mut self, txn: &Value) -> Result<(bool, i64), EtcdError> {
        let body = self.call("/v3/kv/txn", txn)?;
        wire::parse_txn(&body).map_err(EtcdError::Protocol)
    }

    /// Starts a watch on every key under `prefix` from `start_revision`.
    pub fn watch(&mut self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let (conn, mut buf, head) =
            self.open("/v3/watch", &wire::watch_request(prefix, start_revision))?;
        if head.status != 200 {
            let body = read_body_close(conn, buf, &head);
            return Err(EtcdError::Server(wire::parse_error(&body)));
        }
        buf.drain(..head.len);
        Ok(Watch {
            conn,
            raw: buf,
            decoder: (head.framing == Framing::Chunked).then(ChunkedDecoder::new),
            json: Vec::new(),
            pending: Vec::new(),
        })
    }
}

fn read_more(conn: &mut Conn, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = conn.read(&mut chunk)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "etcd closed the connection",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn read_body(conn: &mut Conn, buf: &mut Vec<u8>, head: &wire::Head) -> Result<Vec<u8>, String> {
    let mut raw = buf.split_off(head.len);
    match head.framing {
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(format!("response of {n} bytes is too large"));
            }
            while raw.len() < n {
                read_more(conn, &mut raw).map_err(|e| e.to_string())?;
            }
            raw.truncate(n);
            Ok(raw)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut pos = 0;
            loop {
                let d = dec
                    .decode(&raw[pos..])
                    .map_err(|e| format!("bad chunked body: {e:?}"))?;
                out.extend_from_slice(&raw[pos..][d.data]);
                pos += d.consumed;
                if d.done {
                    return Ok(out);
                }
                if out.len() > MAX_BODY {
                    return Err("response too large".into());
                }
                if d.consumed == 0 {
                    read_more(conn, &mut raw).map_err(|e| e.to_string())?;
                }
            }
        }
        Framing::Close => loop {
            match conn.read_to_end(&mut raw) {
                Ok(_) => return Ok(raw),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        },
    }
}

fn read_body_close(mut conn: Conn, mut buf: Vec<u8>, head: &wire::Head) -> Vec<u8> {
    read_body(&mut conn, &mut buf, head).unwrap_or_default()
}

/// What a watch saw.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A message: see `wire::WatchMessage`.
    Message(WatchMessage),
    /// Nothing arrived within the request timeout (the caller checks that
    /// etcd is still there: a silently dead peer looks exactly like this).
    Quiet,
}

/// A streaming watch: one long HTTP response of chunked JSON messages.
pub struct Watch {
    conn: Conn,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    decoder: Option<ChunkedDecoder>,
    /// De-chunked bytes not yet parsed into messages.
    json: Vec<u8>,
    pending: Vec<WatchMessage>,
}

impl Watch {
    /// The next message; Err when the stream broke (etcd went away).
    pub fn next_event(&mut self) -> Result<WatchEvent, EtcdError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(WatchEvent::Message(self.pending.remove(0)));
            }
            self.dechunk()?;
            let (msgs, used) =
                wire::split_watch_messages(&self.json).map_err(EtcdError::Protocol)?;
            self.json.drain(..used);
            if !msgs.is_empty() {
                self.pending = msgs;
                continue;
            }
            if self.json.len() > MAX_BODY {
                return Err(EtcdError::Protocol("watch message too large".into()));
            }
            match read_more(&mut self.conn, &mut self.raw) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(WatchEvent::Quiet)
                }
                Err(e) => return Err(EtcdError::Unavailable(format!("watch stream: {e}"))),
            }
        }
    }

    fn dechunk(&mut self) -> Result<(), EtcdError> {
        let Some(dec) = &mut self.decoder else {
            self.json.append(&mut self.raw);
            return Ok(());
        };
        let mut pos = 0;
        loop {
            let d = dec
                .decode(&self.raw[pos..])
                .map_err(|e| EtcdError::Protocol(format!("bad chunked watch stream: {e:?}")))?;
            self.json.extend_from_slice(&self.raw[pos..][d.data]);
            pos += d.consumed;
            if d.done {
                self.raw.drain(..pos);
                return Err(EtcdError::Unavailable("etcd ended the watch stream".into()));
            }
            if d.consumed == 0 {
                break;
            }
        }
        self.raw.drain(..pos);
        Ok(())
    }

    /// Shuts the socket, e.g. to stop a watch from another thread's view.
    pub fn close(&self) {
        let _ = self.conn.tcp().shutdown(std::net::Shutdown::Both);
    }
}
