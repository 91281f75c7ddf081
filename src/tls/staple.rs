//! The server certificate resolver of a site with OCSP stapling: it hands
//! rustls the site's one certificate with the OCSP response the stapling
//! thread (`crate::ocsp`) holds right now, or none. Never waits: a
//! handshake that comes before the first response simply has no staple.
//!
//! Each core builds its own resolver (inside its own `ServerConfig`), so
//! the key with the response in it is cached per core and rebuilt only when
//! the staple's version moves: a handshake reads one atomic that changes
//! once per refresh, and takes a lock no other core takes.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::ocsp::Staple;

pub struct StapledCert {
    base: CertifiedKey,
    staple: Arc<Staple>,
    /// (staple version, the key with that version's response).
    cached: Mutex<(u64, Arc<CertifiedKey>)>,
}

impl StapledCert {
    pub fn new(base: CertifiedKey, staple: Arc<Staple>) -> StapledCert {
        let first = with_response(&base, &staple);
        StapledCert {
            cached: Mutex::new((staple.version(), first)),
            base,
            staple,
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let version = self.staple.version();
        let mut cached = match self.cached.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cached.0 != version {
            *cached = (version, with_response(&self.base, &self.staple));
        }
        cached.1.clone()
    }
}

/// The site's key with the staple's response at this moment (read after its
/// version, so a racing update is seen at the next handshake at worst).
fn with_response(base: &CertifiedKey, staple: &Staple) -> Arc<CertifiedKey> {
    let mut key = base.clone();
    key.ocsp = staple.response().map(|r| r.as_ref().clone());
    Arc::new(key)
}

impl ResolvesServerCert for StapledCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for StapledCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StapledCert")
            .field("site", &self.staple.site)
            .field("responder", &self.staple.url.text)
            .finish()
    }
}
