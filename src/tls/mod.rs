//! TLS on both sides of the gateway. The server side (clients connecting to
//! us) is the files at this level: server configs per site, the ClientHello
//! reader, the client-certificate verifier, the record-exact handshake and
//! the userspace stream, resumption checks, the kernel-TLS handover (`ktls`)
//! and handshake failure reasons, and the resolver that staples OCSP
//! responses (`staple`). The client side (us connecting to TLS
//! backends) is `client`. `material` (PEM, PKCS#12, CA bundles, CRLs) serves
//! both.

pub mod client;
pub mod client_hello;
pub mod client_verifier;
pub mod key_usage;
pub mod ktls;
pub mod material;
mod outcome;
pub mod poll;
pub mod reason;
pub mod resumption;
pub mod server_config;
pub mod signature_failure;
pub mod staple;
mod steps;
pub mod stream;

pub use outcome::{HandshakeFailure, HandshakeReads, PeerIdentity};
pub use stream::TlsStream;
