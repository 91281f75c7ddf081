//! Kernel TLS: after rustls has verified the client, the kernel takes over
//! the symmetric crypto and the connection becomes a plain socket that
//! io_uring reads and writes and that can be spliced.
//!
//! - [`probe`]: once per core at start, on loopback sockets with dummy keys:
//!   which suites the kernel takes, in both directions, and whether it can rekey.
//! - [`handover`]: converts one finished handshake, or says why it stays in userspace.
//! - [`KtlsStream`]: the kernel byte stream, with control records (alerts,
//!   KeyUpdate) read and written through cmsgs; [`PollKtls`] is the same in
//!   readiness mode, for HTTP/2. What a control record means, and what we
//!   answer, is `control`'s, shared by both.

mod control;
mod poll;
mod stream;
pub mod sys;

use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::os::fd::AsRawFd;

use ktls_core::{AeadKey, TlsCryptoInfoRx, TlsCryptoInfoTx};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

pub use poll::PollKtls;
pub use stream::KtlsStream;

use super::TlsStream;

/// The six suites the kernel can take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSuite {
    Tls13Aes128Gcm,
    Tls13Aes256Gcm,
    Tls13Chacha20,
    Tls12Aes128Gcm,
    Tls12Aes256Gcm,
    Tls12Chacha20,
}

const ALL_SUITES: [KernelSuite; 6] = [
    KernelSuite::Tls13Aes128Gcm,
    KernelSuite::Tls13Aes256Gcm,
    KernelSuite::Tls13Chacha20,
    KernelSuite::Tls12Aes128Gcm,
    KernelSuite::Tls12Aes256Gcm,
    KernelSuite::Tls12Chacha20,
];

impl KernelSuite {
    /// The kernel suite that can carry a negotiated rustls suite, if any.
    pub fn of(suite: SupportedCipherSuite) -> Option<Self> {
        Some(match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Self::Tls13Aes128Gcm,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Self::Tls13Aes256Gcm,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Self::Tls13Chacha20,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Self::Tls12Aes128Gcm,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Self::Tls12Aes256Gcm,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Self::Tls12Chacha20,
            _ => return None,
        })
    }

    fn version(self) -> ProtocolVersion {
        match self {
            Self::Tls13Aes128Gcm | Self::Tls13Aes256Gcm | Self::Tls13Chacha20 => {
                ProtocolVersion::TLSv1_3
            }
            _ => ProtocolVersion::TLSv1_2,
        }
    }

    /// Zero key material of the right shape, for the probe.
    fn dummy_secrets(self) -> ktls_core::ConnectionTrafficSecrets {
        use ktls_core::ConnectionTrafficSecrets as K;
        match self {
            Self::Tls13Aes128Gcm | Self::Tls12Aes128Gcm => K::Aes128Gcm {
                key: AeadKey::new([0; 16]),
                iv: [0; 8],
                salt: [0; 4],
            },
            Self::Tls13Aes256Gcm | Self::Tls12Aes256Gcm => K::Aes256Gcm {
                key: AeadKey::new([0; 32]),
                iv: [0; 8],
                salt: [0; 4],
            },
            Self::Tls13Chacha20 | Self::Tls12Chacha20 => K::Chacha20Poly1305 {
                key: AeadKey::new([0; 32]),
                iv: [0; 12],
                salt: [],
            },
        }
    }
}

/// Why kernel TLS cannot be used at all on this host.
#[derive(Clone, Debug)]
pub struct Unavailable {
    pub errno: Option<i32>,
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What this core's kernel can do, learned once at start.
#[derive(Clone, Debug)]
pub struct KtlsSupport {
    /// Err: no kernel TLS at all, with the reason in plain words.
    pub available: Result<(), Unavailable>,
    /// (suite, Ok or the reason it failed) for each suite the kernel was asked.
    pub suites: Vec<(KernelSuite, Result<(), String>)>,
    /// Whether TLS_TX/TLS_RX can be set a second time (TLS 1.3 KeyUpdate).
    pub rekey: bool,
}

impl KtlsSupport {
    pub fn supports(&self, suite: KernelSuite) -> bool {
        self.available.is_ok() && self.suites.iter().any(|(s, r)| *s == suite && r.is_ok())
    }

    pub fn none(reason: &str) -> Self {
        KtlsSupport {
            available: Err(Unavailable {
                errno: None,
                reason: reason.into(),
            }),
            suites: Vec::new(),
            rekey: false,
        }
    }
}

/// Asks the kernel, on throwaway loopback connections with zero keys, which
/// suites it takes for sending and receiving, and whether it can rekey.
/// Each probe connection counts once in /proc/net/tls_stat.
pub fn probe() -> KtlsSupport {
    let mut support = KtlsSupport {
        available: Ok(()),
        suites: Vec::new(),
        rekey: false,
    };
    for suite in ALL_SUITES {
        match probe_suite(suite) {
            Ok(rekey) => {
                if suite == KernelSuite::Tls13Aes128Gcm {
                    support.rekey = rekey;
                }
                support.suites.push((suite, Ok(())));
            }
            Err(ProbeError::Ulp(e)) => {
                support.available = Err(ulp_unavailable(&e));
                support.suites.clear();
                return support;
            }
            Err(ProbeError::Suite(why)) => support.suites.push((suite, Err(why))),
            Err(ProbeError::Loopback(e)) => {
                support.available = Err(Unavailable {
                    errno: e.raw_os_error(),
                    reason: format!("kernel TLS could not be probed: no loopback connection ({e})"),
                });
                return support;
            }
        }
    }
    support
}

enum ProbeError {
    Loopback(io::Error),
    Ulp(io::Error),
    Suite(String),
}

fn probe_suite(suite: KernelSuite) -> Result<bool, ProbeError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ProbeError::Loopback)?;
    let addr = listener.local_addr().map_err(ProbeError::Loopback)?;
    let client = StdTcpStream::connect(addr).map_err(ProbeError::Loopback)?;
    let (_server, _) = listener.accept().map_err(ProbeError::Loopback)?;
    let fd = client.as_raw_fd();
    ktls_core::setup_ulp(&sys::borrow(&fd)).map_err(|e| ProbeError::Ulp(ktls_io_error(e)))?;
    let version = ktls_version(suite.version()).map_err(ProbeError::Suite)?;
    let tx = TlsCryptoInfoTx::new(version, suite.dummy_secrets(), 1)
        .map_err(|e| ProbeError::Suite(e.to_string()))?;
    let rx = TlsCryptoInfoRx::new(version, suite.dummy_secrets(), 0)
        .map_err(|e| ProbeError::Suite(e.to_string()))?;
    let version = suite.version();
    tx.set(&sys::borrow(&fd))
        .map_err(|e| ProbeError::Suite(suite_words("TX", &ktls_io_error(e))))?;
    rx.set(&sys::borrow(&fd))
        .map_err(|e| ProbeError::Suite(suite_words("RX", &ktls_io_error(e))))?;
    // A second TLS_TX is what a KeyUpdate needs; kernels before 6.13 say EBUSY.
    let rekey = version == ProtocolVersion::TLSv1_3 && tx.set(&sys::borrow(&fd)).is_ok();
    Ok(rekey)
}

fn ktls_io_error(e: ktls_core::Error) -> io::Error {
    match e {
        ktls_core::Error::Ulp(e)
        | ktls_core::Error::CryptoMaterial(e)
        | ktls_core::Error::General(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn ulp_unavailable(e: &io::Error) -> Unavailable {
    let errno = e.raw_os_error();
    let reason = match errno {
        Some(libc::ENOENT) => {
            "the kernel has no TLS ULP (ENOENT); load it with `modprobe tls` (and list `tls` in /etc/modules-load.d/ to keep it)".to_string()
        }
        Some(libc::ENOPROTOOPT) => "this kernel has no TCP_ULP support (ENOPROTOOPT; older than 4.13)".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => format!("a security policy forbids attaching the TLS ULP ({e})"),
        _ => format!("attaching the TLS ULP failed ({e})"),
    };
    Unavailable { errno, reason }
}

fn suite_words(direction: &str, e: &io::Error) -> String {
    let what = match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
            "this kernel's TLS does not know this cipher"
        }
        Some(libc::ENOENT) => {
            "the kernel crypto algorithm is missing (modprobe gcm / chacha20poly1305)"
        }
        Some(libc::ENOPROTOOPT) => "this kernel has no TLS receive offload (older than 4.17)",
        _ => "the kernel refused the key",
    };
    format!("{direction}: {what} ({e})")
}

/// What became of a finished handshake.
// Made once per connection and taken apart at once: boxing the userspace
// stream would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Handover {
    /// The kernel now encrypts and decrypts.
    Kernel(KtlsStream),
    /// Stays in userspace (nothing was changed), for the stated reason.
    Userspace(TlsStream, &'static str),
    /// The point of no return was passed and the kernel refused: close.
    Failed(io::Error),
}

/// Hands a finished handshake to the kernel if this core's probe allows its suite.
pub fn handover(stream: TlsStream, support: &KtlsSupport) -> Handover {
    let Some(suite) = stream.negotiated_suite().and_then(KernelSuite::of) else {
        return Handover::Userspace(stream, "suite not offloadable");
    };
    if !support.supports(suite) {
        return Handover::Userspace(stream, "kernel does not take this suite");
    }
    let (tcp, conn) = match stream.into_parts() {
        Ok(parts) => parts,
        Err(stream) => return Handover::Userspace(stream, "connection not at a record boundary"),
    };
    let fd = tcp.as_raw_fd();
    // Attaching the ULP without keys changes nothing yet: still reversible.
    if let Err(e) = ktls_core::setup_ulp(&sys::borrow(&fd)) {
        return Handover::Userspace(
            TlsStream::from_parts(tcp, conn),
            ulp_reason(&ktls_io_error(e)),
        );
    }
    // rustls's kernel connection keeps no certificates: the chain moves to
    // the kernel stream (`Transport::peer_certificates`).
    let peer_chain = conn
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    // Point of no return: rustls gives up the connection even on error.
    let (secrets, kconn) = match conn.dangerous_into_kernel_connection() {
        Ok(x) => x,
        Err(e) => {
            return Handover::Failed(io::Error::other(format!(
                "rustls refused the handover: {e}"
            )))
        }
    };
    let version = kconn.protocol_version();
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    let tx = match kernel_crypto_tx(version, tx, tx_seq) {
        Ok(tx) => tx,
        Err(e) => return Handover::Failed(io::Error::other(e)),
    };
    let rx = match kernel_crypto_rx(version, rx, rx_seq) {
        Ok(rx) => rx,
        Err(e) => return Handover::Failed(io::Error::other(e)),
    };
    if let Err(e) = tx.set(&sys::borrow(&fd)) {
        return Handover::Failed(ktls_io_error(e));
    }
    if let Err(e) = rx.set(&sys::borrow(&fd)) {
        return Handover::Failed(ktls_io_error(e));
    }
    Handover::Kernel(KtlsStream::new(
        tcp,
        kconn,
        tx_seq,
        support.rekey,
        peer_chain,
    ))
}

fn ulp_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "kernel has no TLS ULP",
        _ => "attaching the TLS ULP failed",
    }
}

/// Send direction: for TLS 1.2 AES-GCM the kernel writes its `iv` as the
/// explicit nonce of its first record and counts up from there, while rustls
/// already used `iv` itself (XOR sequence 0) for the Finished record under the
/// same key. Handing the kernel `iv` unchanged would reuse that nonce; it gets
/// `iv + 1`, which (counting up) never meets a nonce rustls used.
pub fn kernel_crypto_tx(
    version: ProtocolVersion,
    secrets: ConnectionTrafficSecrets,
    seq: u64,
) -> Result<TlsCryptoInfoTx, String> {
    let nonce_offset = match (&version, &secrets) {
        (
            ProtocolVersion::TLSv1_2,
            ConnectionTrafficSecrets::Aes128Gcm { .. } | ConnectionTrafficSecrets::Aes256Gcm { .. },
        ) => {
            if seq != 1 {
                return Err(format!(
                    "TLS 1.2 send sequence is {seq} at handover, expected 1"
                ));
            }
            1
        }
        _ => 0,
    };
    let secrets = kernel_secrets(secrets, nonce_offset)?;
    TlsCryptoInfoTx::new(ktls_version(version)?, secrets, seq).map_err(|e| e.to_string())
}

fn kernel_crypto_rx(
    version: ProtocolVersion,
    secrets: ConnectionTrafficSecrets,
    seq: u64,
) -> Result<TlsCryptoInfoRx, String> {
    let secrets = kernel_secrets(secrets, 0)?;
    TlsCryptoInfoRx::new(ktls_version(version)?, secrets, seq).map_err(|e| e.to_string())
}

fn ktls_version(version: ProtocolVersion) -> Result<ktls_core::ProtocolVersion, String> {
    match version {
        ProtocolVersion::TLSv1_2 => Ok(ktls_core::ProtocolVersion::TLSv1_2),
        ProtocolVersion::TLSv1_3 => Ok(ktls_core::ProtocolVersion::TLSv1_3),
        other => Err(format!("{other:?} cannot be offloaded")),
    }
}

/// rustls's 12-byte IV is the kernel's 4-byte salt and 8-byte IV (GCM); for
/// ChaCha20 all 12 bytes are the IV. Lengths are checked, never assumed.
fn kernel_secrets(
    secrets: ConnectionTrafficSecrets,
    explicit_nonce_offset: u64,
) -> Result<ktls_core::ConnectionTrafficSecrets, String> {
    fn split_gcm_iv(iv: &[u8], offset: u64) -> Result<([u8; 4], [u8; 8]), String> {
        let salt: [u8; 4] = iv
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or("IV shorter than 4 bytes")?;
        let explicit: [u8; 8] = iv
            .get(4..12)
            .and_then(|s| s.try_into().ok())
            .ok_or("IV shorter than 12 bytes")?;
        Ok((
            salt,
            u64::from_be_bytes(explicit)
                .wrapping_add(offset)
                .to_be_bytes(),
        ))
    }
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            let key: [u8; 16] = key
                .as_ref()
                .try_into()
                .map_err(|_| "AES-128-GCM key is not 16 bytes")?;
            let (salt, iv) = split_gcm_iv(iv.as_ref(), explicit_nonce_offset)?;
            Ok(ktls_core::ConnectionTrafficSecrets::Aes128Gcm {
                key: AeadKey::new(key),
                iv,
                salt,
            })
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let key: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| "AES-256-GCM key is not 32 bytes")?;
            let (salt, iv) = split_gcm_iv(iv.as_ref(), explicit_nonce_offset)?;
            Ok(ktls_core::ConnectionTrafficSecrets::Aes256Gcm {
                key: AeadKey::new(key),
                iv,
                salt,
            })
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            let key: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| "ChaCha20 key is not 32 bytes")?;
            let iv: [u8; 12] = iv
                .as_ref()
                .try_into()
                .map_err(|_| "ChaCha20 IV is not 12 bytes")?;
            Ok(ktls_core::ConnectionTrafficSecrets::Chacha20Poly1305 {
                key: AeadKey::new(key),
                iv,
                salt: [],
            })
        }
        _ => Err("cipher not supported by kernel TLS".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aes256(explicit: u64) -> ConnectionTrafficSecrets {
        let mut iv = [9u8; 12];
        iv[4..].copy_from_slice(&explicit.to_be_bytes());
        ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7; 32]),
            iv: rustls::crypto::cipher::Iv::new(iv),
        }
    }

    #[test]
    fn tls12_gcm_send_nonce_starts_past_the_one_rustls_used() {
        match kernel_secrets(aes256(u64::MAX), 1) {
            Ok(ktls_core::ConnectionTrafficSecrets::Aes256Gcm { iv, salt, .. }) => {
                assert_eq!(salt, [9; 4]);
                assert_eq!(iv, 0u64.to_be_bytes(), "E + 1 wraps");
            }
            _ => panic!("expected AES-256-GCM secrets"),
        }
        match kernel_secrets(aes256(41), 0) {
            Ok(ktls_core::ConnectionTrafficSecrets::Aes256Gcm { iv, .. }) => {
                assert_eq!(iv, 41u64.to_be_bytes())
            }
            _ => panic!("expected AES-256-GCM secrets"),
        }
    }

    #[test]
    fn tls12_gcm_handover_requires_send_sequence_one() {
        assert!(kernel_crypto_tx(ProtocolVersion::TLSv1_2, aes256(5), 2).is_err());
        assert!(kernel_crypto_tx(ProtocolVersion::TLSv1_2, aes256(5), 1).is_ok());
        assert!(kernel_crypto_tx(ProtocolVersion::TLSv1_3, aes256(5), 2).is_ok());
    }

    #[test]
    fn this_host_probe_answers_in_plain_words() {
        // On hosts without kTLS the reason must say what to do; with kTLS every
        // suite must have been asked.
        let s = probe();
        match &s.available {
            Err(u) => assert!(!u.reason.is_empty()),
            Ok(()) => assert_eq!(s.suites.len(), ALL_SUITES.len()),
        }
    }
}
