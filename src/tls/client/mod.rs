//! TLS (and mutual TLS) from the gateway to a backend.
//!
//! [`client_config`] builds one rustls client config per config load, shared
//! by every core; [`TlsClientStream::connect`] runs the handshake over a
//! backend `TcpStream` and the result implements [`Transport`], so the proxy
//! speaks to a TLS backend exactly as to a plain one.
//!
//! The stream drives rustls's buffered `ClientConnection` with monoio's
//! ownership-passing reads and writes: one ciphertext buffer each way, reused
//! for the life of the connection; plaintext is copied straight from rustls's
//! buffer onto the caller's `Vec`. Writing never decrypts anything: received
//! records are only processed by reads, so nothing can be lost in between.
//!
//! Session resumption uses rustls's default in-memory client session cache,
//! which sits inside the shared config (one small mutex across cores, taken
//! once per handshake).

use std::fmt;
use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    Error, RootCertStore, SignatureScheme,
};

use crate::io::{Transport, CLOSE_FLUSH_TIME, MIN_READ};
use crate::tls::server_config::{provider, ALPN_HTTP11};

/// What a backend's TLS needs; built once per config load, shared by all cores.
pub struct UpstreamTlsSettings {
    /// CA bundle the backend's certificate must chain to (non-empty).
    pub roots: Vec<CertificateDer<'static>>,
    /// The certificate chain and key the gateway presents (mutual TLS).
    pub client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// false = insecure_skip_verify_hostname: chain, validity and signatures
    /// are still verified, only the name check is skipped.
    pub verify_hostname: bool,
}

/// The client config for backends: TLS 1.2 and 1.3, ALPN "http/1.1".
pub fn client_config(settings: UpstreamTlsSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    if settings.roots.is_empty() {
        return Err("no CA certificate to verify backends with: the CA bundle is empty".into());
    }
    let mut roots = RootCertStore::empty();
    let count = settings.roots.len();
    for (i, ca) in settings.roots.into_iter().enumerate() {
        roots.add(ca).map_err(|e| {
            format!(
                "CA certificate {} of {count} is not a usable CA certificate: {e}",
                i + 1
            )
        })?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot verify backends with this CA bundle: {e}"))?;

    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions not supported: {e}"))?;
    let builder = if settings.verify_hostname {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipHostnameVerifier { inner: webpki }))
    };
    let mut config = match settings.client_identity {
        Some((chain, _)) if chain.is_empty() => {
            return Err("client certificate file holds no certificate".into())
        }
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            format!("client key does not match the client certificate or is unsupported: {e}")
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Verifies everything about the backend's certificate but its name.
///
/// The inner verifier checks the chain (trust, validity, usage) before the
/// name, so a name error means everything before it passed.
#[derive(Debug)]
struct SkipHostnameVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SkipHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[non_exhaustive]
#[derive(Debug)]
pub enum UpstreamTlsError {
    /// The socket failed, or the backend closed it mid-handshake.
    Io(io::Error),
    /// The handshake was refused (by us or by the backend), in plain words.
    Tls(String),
}

impl fmt::Display for UpstreamTlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "backend connection failed during the TLS handshake: {e}"),
            Self::Tls(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for UpstreamTlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Tls(_) => None,
        }
    }
}

/// Most ciphertext gathered before it is written while encrypting one write.
const MAX_OUTGOING: usize = 64 * 1024;

/// A client-side TLS connection to a backend over a monoio `TcpStream`.
///
/// A TCP EOF without the backend's close_notify reads as EOF (Ok(0)), like a
/// clean close: HTTP/1.1 framing (Content-Length, chunked) detects a
/// truncated body by itself. Where the body is delimited by the close, check
/// [`TlsClientStream::received_close_notify`].
pub struct TlsClientStream {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Ciphertext read from the socket; `incoming[fed..]` is not yet given to rustls.
    incoming: Vec<u8>,
    fed: usize,
    /// Ciphertext produced by rustls and not yet written.
    outgoing: Vec<u8>,
    /// Whether our config presents a client certificate (for error wording).
    presents_certificate: bool,
    /// The backend sent close_notify.
    close_notify: bool,
    /// The socket reached EOF.
    tcp_eof: bool,
    /// The TLS-level reason a read failed, in plain words.
    failure: Option<String>,
}

impl TlsClientStream {
    /// Runs the handshake. Errors keep rustls's reason in plain words.
    ///
    /// No timeout here: wrap the call, as `upstream::connect` does. Under TLS
    /// 1.3 the backend judges our client certificate after our handshake has
    /// finished, so its refusal arrives with the first read instead (the read
    /// error then says so in the same words).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<TlsClientStream, UpstreamTlsError> {
        let presents_certificate = config.client_auth_cert_resolver.has_certs();
        let name = server_name.to_str().into_owned();
        let conn = ClientConnection::new(config, server_name)
            .map_err(|e| UpstreamTlsError::Tls(describe(&e, Some(&name), presents_certificate)))?;
        let mut stream = TlsClientStream {
            tcp,
            conn,
            incoming: Vec::with_capacity(MIN_READ),
            fed: 0,
            outgoing: Vec::with_capacity(4096),
            presents_certificate,
            close_notify: false,
            tcp_eof: false,
            failure: None,
        };
        match stream.handshake(&name).await {
            Ok(()) => Ok(stream),
            Err(e) => {
                let _ = stream.tcp.shutdown().await;
                Err(e)
            }
        }
    }

    /// Whether the backend ended the TLS session with close_notify (false
    /// after a bare TCP EOF, which may be a truncation).
    pub fn received_close_notify(&self) -> bool {
        self.close_notify
    }

    /// Whether nothing at all is waiting: no ciphertext or plaintext in our
    /// buffers or rustls's, no close seen, and nothing readable on the socket.
    pub fn is_idle_clean(&mut self) -> bool {
        let buffered = self.fed < self.incoming.len()
            || self.conn.reader().fill_buf().is_ok_and(|b| !b.is_empty());
        !buffered
            && !self.close_notify
            && !self.tcp_eof
            && crate::sock::peek_idle(&self.tcp) == crate::sock::Idle::Quiet
    }

    async fn handshake(&mut self, name: &str) -> Result<(), UpstreamTlsError> {
        loop {
            self.queue_tls().map_err(UpstreamTlsError::Io)?;
            self.flush().await.map_err(UpstreamTlsError::Io)?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            if self.close_notify {
                return Err(UpstreamTlsError::Tls(
                    "backend closed the TLS session during the handshake".into(),
                ));
            }
            if self.fed == self.incoming.len() {
                match self.read_ciphertext().await {
                    Ok(0) => {
                        return Err(UpstreamTlsError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection during the TLS handshake",
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(UpstreamTlsError::Io(e)),
                }
            }
            if let Err(e) = self.feed() {
                let reason = match e {
                    Fed::Tls(e) => describe(&e, Some(name), self.presents_certificate),
                    Fed::Io(e) => return Err(UpstreamTlsError::Io(e)),
                };
                self.send_alert().await;
                return Err(UpstreamTlsError::Tls(reason));
            }
        }
    }

    /// Gives rustls one batch of the buffered ciphertext and processes it.
    fn feed(&mut self) -> Result<(), Fed> {
        let mut rest = self.incoming.get(self.fed..).unwrap_or_default();
        let n = self.conn.read_tls(&mut rest).map_err(Fed::Io)?;
        self.fed += n;
        if self.fed == self.incoming.len() {
            self.incoming.clear();
            self.fed = 0;
        }
        let state = self.conn.process_new_packets().map_err(Fed::Tls)?;
        if state.peer_has_closed() {
            self.close_notify = true;
        }
        Ok(())
    }

    /// Reads what the socket has onto `incoming`.
    async fn read_ciphertext(&mut self) -> io::Result<usize> {
        if self.incoming.capacity() == 0 {
            self.incoming = crate::io::take_buffer(MIN_READ);
        }
        let (res, buf) = self
            .tcp
            .read_append(std::mem::take(&mut self.incoming))
            .await;
        self.incoming = buf;
        if let Ok(0) = res {
            self.tcp_eof = true;
            // Tell rustls too (it then knows a later EOF is unclean).
            let _ = self.conn.read_tls(&mut io::empty());
        }
        res
    }

    /// Moves what rustls wants to send onto `outgoing`.
    fn queue_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.outgoing)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        crate::io::drain_to(&mut self.tcp, &mut self.outgoing).await
    }

    /// After an error rustls has queued an alert for the backend: send it, best effort.
    async fn send_alert(&mut self) {
        if self.queue_tls().is_ok() {
            let _ = self.flush().await;
        }
    }

    /// Appends the plaintext rustls holds to `dst`; Ok(0) when it holds none.
    fn take_plaintext(&mut self, dst: &mut Vec<u8>) -> usize {
        let mut reader = self.conn.reader();
        let mut total = 0;
        // fill_buf errs with WouldBlock (no data yet) or UnexpectedEof (no
        // data, TCP EOF without close_notify): both mean "nothing here".
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            dst.extend_from_slice(chunk);
            reader.consume(n);
            total += n;
        }
        total
    }

    /// A failed feed as an `io::Error` for the `Transport` read; a TLS-level
    /// reason is also kept on the stream ([`TlsClientStream::tls_failure`]),
    /// so the proxy can answer "TLS with the backend failed" rather than
    /// "reset" without digging it back out of the `io::Error`.
    fn read_error(&mut self, e: Fed) -> io::Error {
        match e {
            Fed::Io(e) => e,
            Fed::Tls(e) => {
                let why = describe(&e, None, self.presents_certificate);
                let err = io::Error::new(io::ErrorKind::InvalidData, why.clone());
                self.failure = Some(why);
                err
            }
        }
    }

    /// Why TLS with the backend failed, after a read failed for that reason.
    pub fn tls_failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

/// Why feeding ciphertext to rustls failed.
enum Fed {
    Io(io::Error),
    Tls(Error),
}

impl Transport for TlsClientStream {
    async fn read_append(&mut self, mut dst: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if dst.capacity() - dst.len() < MIN_READ {
            dst.reserve(MIN_READ);
        }
        loop {
            let n = self.take_plaintext(&mut dst);
            if n > 0 {
                return (Ok(n), dst);
            }
            if self.close_notify {
                return (Ok(0), dst);
            }
            if self.fed < self.incoming.len() {
                let fed = self.feed();
                // Alerts after an error, KeyUpdate answers: send them now.
                let queued = self.queue_tls();
                let flushed = self.flush().await;
                if let Err(e) = fed {
                    return (Err(self.read_error(e)), dst);
                }
                if let Err(e) = queued.and(flushed) {
                    return (Err(e), dst);
                }
                continue;
            }
            if self.tcp_eof {
                // EOF without close_notify: read as EOF (see the type's docs).
                return (Ok(0), dst);
            }
            if let Err(e) = self.read_ciphertext().await {
                return (Err(e), dst);
            }
        }
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        let Some(mut data) = buf.get(range) else {
            return (Err(io::Error::other("write range outside the buffer")), buf);
        };
        while !data.is_empty() {
            // rustls accepts up to its buffer limit per call.
            let n = match io::Write::write(&mut self.conn.writer(), data) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            data = &data[n..];
            if let Err(e) = self.queue_tls() {
                return (Err(e), buf);
            }
            if n == 0 && self.outgoing.is_empty() {
                return (
                    Err(io::Error::other("TLS connection no longer accepts data")),
                    buf,
                );
            }
            if self.outgoing.len() >= MAX_OUTGOING || n == 0 {
                if let Err(e) = self.flush().await {
                    return (Err(e), buf);
                }
            }
        }
        let res = self.flush().await;
        (res, buf)
    }

    async fn close(&mut self) {
        self.conn.send_close_notify();
        if self.queue_tls().is_ok() {
            let _ = monoio::time::timeout(CLOSE_FLUSH_TIME, self.flush()).await;
        }
        let _ = self.tcp.shutdown().await;
    }

    fn abort(&mut self) {
        crate::sock::set_abortive_close(&self.tcp);
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        let buffered = self.fed < self.incoming.len()
            || self.conn.reader().fill_buf().is_ok_and(|b| !b.is_empty());
        if buffered || self.close_notify || self.tcp_eof {
            return Ok(());
        }
        // Nothing buffered: hand the buffers back while the backend is idle.
        crate::io::give_buffer(std::mem::take(&mut self.incoming));
        self.fed = 0;
        crate::io::give_buffer(std::mem::take(&mut self.outgoing));
        self.tcp.readable(false).await
    }
}

/// A backend-side TLS failure in plain words. `name` is the name the
/// backend's certificate was checked against (handshake only).
fn describe(e: &Error, name: Option<&str>, presents_certificate: bool) -> String {
    match e {
        Error::InvalidCertificate(c) => describe_certificate(c, name),
        Error::AlertReceived(alert) if is_certificate_alert(*alert) => {
            if presents_certificate {
                format!("backend refused our client certificate (alert {alert:?})")
            } else {
                format!(
                    "backend requires a client certificate and none is configured (alert {alert:?})"
                )
            }
        }
        Error::AlertReceived(alert) => format!("backend sent TLS alert {alert:?}"),
        Error::NoApplicationProtocol => {
            "backend does not speak HTTP/1.1 (refused ALPN http/1.1)".into()
        }
        Error::PeerIncompatible(p) => {
            format!("backend offered nothing we accept ({p:?})")
        }
        Error::PeerMisbehaved(p) => format!("backend violated the TLS protocol ({p:?})"),
        Error::InvalidMessage(m) => {
            format!("backend sent an invalid TLS message ({m:?}); is it a plain-HTTP port?")
        }
        other => format!("TLS with the backend failed: {other}"),
    }
}

fn describe_certificate(c: &CertificateError, name: Option<&str>) -> String {
    match c {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let valid_for = if presented.is_empty() {
                "it names no host".to_string()
            } else {
                let names: Vec<&str> = presented.iter().map(|n| plain_name(n)).collect();
                format!("it is valid for {}", names.join(", "))
            };
            format!(
                "backend certificate is not valid for {} ({valid_for})",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => format!(
            "backend certificate is not valid for {}",
            name.unwrap_or("the backend's name")
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "backend certificate not trusted: certificate is not valid for TLS server authentication"
                .into()
        }
        other => format!(
            "backend certificate not trusted: {}",
            crate::tls::reason::describe(&Error::InvalidCertificate(other.clone()))
        ),
    }
}

/// `DnsName("a.example")` -> `a.example`, `IpAddress(192.0.2.1)` -> `192.0.2.1`
/// (webpki's debug form of a certificate's names); anything else unchanged.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// Alerts a server sends about the client's certificate.
fn is_certificate_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

#[cfg(test)]
mod tests;
