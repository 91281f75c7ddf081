//! One client connection: a monoio TCP socket, optionally with a buffered
//! rustls `ClientConnection` fed from in-memory buffers. Buffers are owned
//! and passed through each I/O call and back (monoio's completion model), and
//! reused for the connection's life.

use std::io::{self, Read, Write};
use std::mem::{self, ManuallyDrop};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

/// Free space each socket read offers the kernel.
const READ_SIZE: usize = 32 * 1024;

/// Why a connection attempt or an exchange failed; the report groups them.
#[derive(Debug)]
pub enum Failure {
    Connect(String),
    TlsHandshake(String),
    Read(String),
    Write(String),
    HttpParse(String),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::TlsHandshake(_) => "tls_handshake",
            Failure::Read(_) => "read",
            Failure::Write(_) => "write",
            Failure::HttpParse(_) => "http_parse",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Failure::Connect(s)
            | Failure::TlsHandshake(s)
            | Failure::Read(s)
            | Failure::Write(s)
            | Failure::HttpParse(s) => s,
        }
    }
}

/// The first few words of an error text: enough to tell failures apart in
/// the report without one line per peer address or port.
pub fn first_words(text: &str) -> String {
    let mut out = String::new();
    for w in text.split_whitespace().take(8) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
        if out.len() > 80 {
            break;
        }
    }
    out
}

fn io_text(e: &io::Error) -> String {
    first_words(&e.to_string())
}

pub struct TlsInfo {
    pub version: String,
    pub suite: String,
    pub alpn: Option<String>,
    pub kind: Option<HandshakeKind>,
}

pub struct Conn {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// TLS: ciphertext just read from the socket.
    rbuf: Vec<u8>,
    /// Bytes on their way to the socket.
    wbuf: Vec<u8>,
    /// Plaintext received and not yet consumed by the HTTP parser
    /// (`plain[ppos..]`).
    plain: Vec<u8>,
    ppos: usize,
    /// Application data has arrived on this connection: a TLS error after
    /// that is a read error, before it a (TLS 1.3 post-Finished) handshake
    /// rejection such as a refused client certificate.
    got_data: bool,
}

impl Conn {
    /// TCP connect, then the TLS handshake when `tls` is given.
    pub async fn open(
        addr: SocketAddr,
        tls: Option<(&Arc<ClientConfig>, &ServerName<'static>)>,
    ) -> Result<Self, Failure> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::Connect(io_text(&e)))?;
        let _ = tcp.set_nodelay(true);
        let tls = match tls {
            None => None,
            Some((config, name)) => Some(Box::new(
                ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| Failure::TlsHandshake(first_words(&e.to_string())))?,
            )),
        };
        let mut conn = Conn {
            tcp,
            tls,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            plain: Vec::new(),
            ppos: 0,
            got_data: false,
        };
        if conn.tls.is_some() {
            conn.handshake().await?;
        }
        Ok(conn)
    }

    async fn handshake(&mut self) -> Result<(), Failure> {
        loop {
            if self.tls().wants_write() {
                self.flush_tls()
                    .await
                    .map_err(|e| Failure::TlsHandshake(format!("write: {}", io_text(&e))))?;
            }
            if !self.tls().is_handshaking() {
                return Ok(());
            }
            let n = self
                .read_socket()
                .await
                .map_err(|e| Failure::TlsHandshake(format!("read: {}", io_text(&e))))?;
            if n == 0 {
                return Err(Failure::TlsHandshake(
                    "connection closed by the server during the handshake".into(),
                ));
            }
            if let Err(e) = self.absorb(n) {
                // Send the alert rustls queued, if any; the error is what counts.
                if self.tls().wants_write() {
                    let _ = self.flush_tls().await;
                }
                return Err(Failure::TlsHandshake(first_words(&e.to_string())));
            }
        }
    }

    fn tls(&mut self) -> &mut ClientConnection {
        self.tls.as_mut().expect("TLS connection")
    }

    /// The socket, the TLS connection after its handshake, and the
    /// plaintext already decrypted and not consumed (an HTTP/2 server's
    /// SETTINGS may come with its last handshake flight): for `http2::io`,
    /// which drives them in readiness mode.
    pub fn into_parts(mut self) -> (TcpStream, Option<Box<ClientConnection>>, Vec<u8>) {
        let plain = self.plain.split_off(self.ppos);
        (self.tcp, self.tls, plain)
    }

    /// Negotiated parameters, for the report.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        let c = self.tls.as_ref()?;
        Some(TlsInfo {
            version: c
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            suite: c
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            alpn: c
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            kind: c.handshake_kind(),
        })
    }

    /// Sends the whole request.
    pub async fn send(&mut self, request: &[u8]) -> Result<(), Failure> {
        match self.tls.as_mut() {
            Some(_) => {
                // rustls buffers a limited amount of plaintext (64 KiB by
                // default): hand it what it takes, write that out, repeat.
                let mut off = 0;
                while off < request.len() {
                    let n = self
                        .tls()
                        .writer()
                        .write(&request[off..])
                        .map_err(|e| Failure::Write(io_text(&e)))?;
                    off += n;
                    if n == 0 && !self.tls().wants_write() {
                        return Err(Failure::Write("TLS connection refuses more data".into()));
                    }
                    self.flush_tls()
                        .await
                        .map_err(|e| Failure::Write(io_text(&e)))?;
                }
                Ok(())
            }
            None => {
                self.wbuf.clear();
                self.wbuf.extend_from_slice(request);
                self.write_wbuf()
                    .await
                    .map_err(|e| Failure::Write(io_text(&e)))
            }
        }
    }

    /// Unconsumed plaintext.
    pub fn pending(&self) -> &[u8] {
        &self.plain[self.ppos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.ppos += n;
        if self.ppos == self.plain.len() {
            self.plain.clear();
            self.ppos = 0;
        }
    }

    /// Reads until more plaintext is available. Returns how many bytes were
    /// added, 0 at end of stream (close_notify or TCP EOF).
    pub async fn read_more(&mut self) -> Result<usize, Failure> {
        if self.ppos > 0 {
            self.plain.drain(..self.ppos);
            self.ppos = 0;
        }
        if self.tls.is_none() {
            let mut buf = mem::take(&mut self.plain);
            if buf.capacity() - buf.len() < READ_SIZE / 2 {
                buf.reserve(READ_SIZE);
            }
            let (start, end) = (buf.len(), buf.capacity());
            let (res, slice) = self.tcp.read(buf.slice_mut(start..end)).await;
            self.plain = slice.into_inner();
            let n = res.map_err(|e| Failure::Read(io_text(&e)))?;
            self.got_data |= n > 0;
            return Ok(n);
        }
        loop {
            let n = self
                .read_socket()
                .await
                .map_err(|e| Failure::Read(io_text(&e)))?;
            if n == 0 {
                return Ok(0);
            }
            let before = self.plain.len();
            let peer_closed = match self.absorb(n) {
                Ok(closed) => closed,
                Err(e) => {
                    if self.tls().wants_write() {
                        let _ = self.flush_tls().await;
                    }
                    let words = first_words(&e.to_string());
                    return Err(if self.got_data {
                        Failure::Read(format!("tls: {words}"))
                    } else {
                        Failure::TlsHandshake(words)
                    });
                }
            };
            // A KeyUpdate or similar may need an answer.
            if self.tls().wants_write() {
                self.flush_tls()
                    .await
                    .map_err(|e| Failure::Write(io_text(&e)))?;
            }
            let added = self.plain.len() - before;
            if added > 0 {
                self.got_data = true;
                return Ok(added);
            }
            if peer_closed {
                return Ok(0);
            }
        }
    }

    /// One socket read into `rbuf` (replacing its contents).
    async fn read_socket(&mut self) -> io::Result<usize> {
        let mut buf = mem::take(&mut self.rbuf);
        buf.clear();
        if buf.capacity() < READ_SIZE {
            buf.reserve(READ_SIZE);
        }
        let cap = buf.capacity();
        let (res, slice) = self.tcp.read(buf.slice_mut(0..cap)).await;
        self.rbuf = slice.into_inner();
        res
    }

    /// Feeds `rbuf[..n]` to rustls and moves any plaintext onto `plain`.
    /// True when the server has sent close_notify.
    fn absorb(&mut self, n: usize) -> Result<bool, rustls::Error> {
        let mut peer_closed = false;
        let tls = self.tls.as_mut().expect("TLS connection");
        let mut input = &self.rbuf[..n];
        while !input.is_empty() {
            // read_tls takes what fits in its buffer; process and drain
            // plaintext between rounds so the buffer never stays full.
            let used = match tls.read_tls(&mut input) {
                Ok(used) => used,
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            };
            let state = tls.process_new_packets()?;
            let avail = state.plaintext_bytes_to_read();
            if avail > 0 {
                let start = self.plain.len();
                self.plain.resize(start + avail, 0);
                let mut filled = start;
                while filled < self.plain.len() {
                    match tls.reader().read(&mut self.plain[filled..]) {
                        Ok(0) => break,
                        Ok(k) => filled += k,
                        Err(_) => break,
                    }
                }
                self.plain.truncate(filled);
            }
            peer_closed = state.peer_has_closed();
            if used == 0 && peer_closed {
                // Bytes after close_notify: nothing more will be read.
                break;
            }
            if used == 0 && avail == 0 {
                // Nothing taken and nothing freed: would spin.
                return Err(rustls::Error::General("TLS input not consumed".into()));
            }
        }
        Ok(peer_closed)
    }

    /// Writes everything rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        self.wbuf.clear();
        {
            let tls = self.tls.as_mut().expect("TLS connection");
            while tls.wants_write() {
                tls.write_tls(&mut self.wbuf)?;
            }
        }
        self.write_wbuf().await
    }

    async fn write_wbuf(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = mem::take(&mut self.wbuf);
        let (res, mut buf) = self.tcp.write_all(buf).await;
        buf.clear();
        self.wbuf = buf;
        res.map(|_| ())
    }

    /// Ends the connection politely: close_notify (TLS), then FIN. The caller
    /// bounds it in time; `abort` follows either way when the value drops.
    pub async fn close(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = self.flush_tls().await;
        }
        self.shutdown(Shutdown::Write);
    }

    /// Shuts the socket down in both directions. Any read or write still
    /// pending in the kernel for it (one abandoned by a timeout) completes
    /// at once instead of keeping the socket open until the server speaks.
    pub fn abort(&self) {
        self.shutdown(Shutdown::Both);
    }

    fn shutdown(&self, how: Shutdown) {
        // Borrow the descriptor as a std socket just for shutdown(2); the
        // monoio stream still owns it and closes it on drop.
        let std =
            ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(self.tcp.as_raw_fd()) });
        let _ = std.shutdown(how);
    }
}
