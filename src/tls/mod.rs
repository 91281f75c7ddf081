//! TLS: server configs, the client-certificate verifier, the record-exact
//! handshake, userspace TLS streams, and plain-words handshake failure reasons.

pub mod client_hello;
pub mod client_verifier;
pub mod key_usage;
pub mod ktls;
pub mod material;
pub mod reason;
pub mod resumption;
pub mod server_config;
pub mod signature_failure;
pub mod stream;

pub use stream::{HandshakeFailure, PeerIdentity, TlsStream};
