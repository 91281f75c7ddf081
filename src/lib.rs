//! Portcullis: a thread-per-core mTLS API gateway.
//!
//! Layering (imports point down): `cli -> gateway -> runtime, proxy -> {tls,
//! http, upstream, router, error}`; `config` compiles the TOML into the types
//! the rest uses. `http` and the TLS parsers do no I/O, so they are tested
//! byte by byte.

pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy_tuning;
pub mod doctor;
pub mod drain;
pub mod echo;
pub mod error;
pub mod exchange;
pub mod expiry;
pub mod gateway;
pub mod generation;
pub mod http;
pub mod http2;
pub mod http_fetch;
pub mod identity;
pub mod io;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod ocsp;
pub mod proxy;
pub mod proxy_protocol;
pub mod router;
pub mod runtime;
pub mod sock;
pub mod tls;
pub mod trusted_proxies;
pub mod upgrade;
pub mod upstream;
