//! Whether a CRL fetched from a `crl_urls` URL may replace the copy kept:
//! it must parse as the client verifier will parse it, be signed by one of
//! the site's client CAs (the HTTP transport proves nothing), and not be
//! older than the kept copy (a replayed old CRL would un-revoke clients).
//! Pure: bytes in, a verdict out.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

/// The CRLs in `data` (one DER CRL, or PEM with one or more `X509 CRL`
/// blocks), each checked as above. `kept` is the copy on disk, if any.
pub fn check_fetched(
    data: &[u8],
    cas: &[CertificateDer<'_>],
    kept: Option<&[u8]>,
) -> Result<(), String> {
    let crls = split(data)?;
    let kept_this_update = kept.and_then(|k| split(k).ok()).and_then(|k| {
        k.iter()
            .filter_map(|c| crate::expiry::describe_crl(c.as_ref()).ok())
            .map(|(_, this_update, _)| this_update)
            .max()
    });
    for (i, crl) in crls.iter().enumerate() {
        let which = if crls.len() > 1 {
            format!("CRL #{}: ", i + 1)
        } else {
            String::new()
        };
        webpki::OwnedCertRevocationList::from_der(crl.as_ref())
            .map_err(|e| format!("{which}{}", crate::tls::material::crl_problem(&e)))?;
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("{which}not an X.509 CRL: {e}"))?;
        let signed = cas.iter().any(|ca| {
            x509_parser::parse_x509_certificate(ca.as_ref())
                .ok()
                .is_some_and(|(_, ca)| {
                    ca.subject().as_raw() == parsed.issuer().as_raw()
                        && parsed.verify_signature(ca.public_key()).is_ok()
                })
        });
        if !signed {
            return Err(format!(
                "{which}not signed by any of the site's client CAs (issuer \"{}\")",
                parsed.issuer()
            ));
        }
        let this_update = parsed.last_update().timestamp();
        if let Some(kept) = kept_this_update {
            if this_update < kept {
                return Err(format!(
                    "{which}older than the copy kept (thisUpdate {} before {}): a replayed CRL could un-revoke certificates",
                    crate::expiry::date_text(this_update),
                    crate::expiry::date_text(kept)
                ));
            }
        }
    }
    Ok(())
}

/// PEM (one or more blocks) or a single DER CRL, as `tls::material` reads files.
fn split(data: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    if data.trim_ascii_start().starts_with(b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM CRL: {e}"))?;
        if crls.is_empty() {
            return Err("no X509 CRL block in this PEM".to_string());
        }
        Ok(crls)
    } else if data.is_empty() {
        Err("empty body".to_string())
    } else {
        Ok(vec![CertificateRevocationListDer::from(data.to_vec())])
    }
}

#[cfg(test)]
mod tests;
