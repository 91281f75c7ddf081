//! What a resumed TLS session may restore, checked again at resumption.
//!
//! A session ticket (or TLS 1.2 session ID) lets a client skip certificate
//! verification: rustls restores the client chain it verified when the
//! session began. Two rules keep that safe. First, a ticket only ever
//! resumes under the trust configuration that verified it: every site has
//! its own ticket key and session cache, new with each config generation, so
//! another site, listener or reload cannot decrypt or find it (see
//! `generation.rs`). Second, within one site and generation the only thing
//! that can change is the clock: a certificate valid when the ticket was
//! issued may have expired since. This module checks that second rule. Pure:
//! certificates and a time in, a verdict out.

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::CertificateError;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Whether every certificate of a restored client chain is still within its
/// validity period at `now`. The error is the one a full handshake would have
/// given for the first certificate out of its period.
pub fn check_restored_chain(
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), CertificateError> {
    for der in chain {
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            // It parsed when it was verified; a ticket is authenticated, so
            // this cannot happen short of a bug. Refuse rather than trust it.
            return Err(CertificateError::BadEncoding);
        };
        let validity = cert.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now_secs > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after: unix_time(not_after),
            });
        }
        if now_secs < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before: unix_time(not_before),
            });
        }
    }
    Ok(())
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cert_valid(from: i64, until: i64) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["client".into()]).expect("certificate params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(until).expect("time");
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").der().clone()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    #[test]
    fn a_chain_inside_its_validity_passes() {
        let chain = [cert_valid(1_000, 2_000), cert_valid(500, 3_000)];
        assert_eq!(check_restored_chain(&chain, at(1_500)), Ok(()));
        assert_eq!(check_restored_chain(&[], at(1_500)), Ok(()));
    }

    #[test]
    fn an_expired_leaf_or_intermediate_fails_with_its_date() {
        let chain = [cert_valid(1_000, 2_000), cert_valid(500, 3_000)];
        assert_eq!(
            check_restored_chain(&chain, at(2_001)),
            Err(CertificateError::ExpiredContext {
                time: at(2_001),
                not_after: at(2_000)
            })
        );
        let chain = [cert_valid(1_000, 5_000), cert_valid(500, 3_000)];
        assert!(matches!(
            check_restored_chain(&chain, at(4_000)),
            Err(CertificateError::ExpiredContext { .. })
        ));
        assert!(matches!(
            check_restored_chain(&chain, at(900)),
            Err(CertificateError::NotValidYetContext { .. })
        ));
    }

    #[test]
    fn garbage_is_refused() {
        let chain = [CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])];
        assert_eq!(
            check_restored_chain(&chain, at(1)),
            Err(CertificateError::BadEncoding)
        );
    }
}
