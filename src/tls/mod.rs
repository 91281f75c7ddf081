//! TLS: server configs, the record-exact handshake, userspace TLS streams,
//! and plain-words handshake failure reasons.

pub mod client_hello;
pub mod ktls;
pub mod material;
pub mod reason;
pub mod resumption;
pub mod server_config;
pub mod signature_failure;
pub mod stream;

pub use stream::{HandshakeFailure, PeerIdentity, TlsStream};
