//! Checks an OCSP response before it is stapled (RFC 6960 sections 3.2 and
//! 4.2.2.2): successful and basic; signed by the issuer, or by a responder
//! certificate the issuer signed for `id-kp-OCSPSigning` and valid now;
//! about this certificate; thisUpdate not in the future and nextUpdate not
//! past. Pure: the response bytes, the certificate pair and the time in,
//! a verdict out.

use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode, Header, Reader, SliceReader};
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

use super::request::CertPair;

/// id-pkix-ocsp-basic.
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), DER contents, as webpki wants it.
const KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
/// How far a responder's clock may run ahead of ours (thisUpdate).
pub const CLOCK_SKEW_SECS: u64 = 300;

/// The certificate's status as the responder signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Good,
    /// Revoked at this time (seconds since the epoch).
    Revoked { at: u64 },
    Unknown,
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Revoked { .. } => "revoked",
            Status::Unknown => "unknown",
        }
    }
}

/// A response that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub status: Status,
    /// Seconds since the epoch.
    pub this_update: u64,
    /// None: the responder says newer information is always available.
    pub next_update: Option<u64>,
    /// Who signed it: "issuer" or the delegated responder's subject.
    pub signer: String,
}

/// Verifies `response` (DER) for `pair` at `now` (seconds since the epoch).
pub fn verify(
    response: &[u8],
    pair: &CertPair,
    now: u64,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<Verified, String> {
    let outer =
        OcspResponse::from_der(response).map_err(|e| format!("not an OCSP response: {e}"))?;
    if outer.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "the responder answered {:?} instead of a response",
            outer.response_status
        ));
    }
    let Some(bytes) = outer.response_bytes else {
        return Err("a successful OCSP response without a body".into());
    };
    if bytes.response_type != OCSP_BASIC {
        return Err(format!(
            "response type {} is not id-pkix-ocsp-basic",
            bytes.response_type
        ));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|e| format!("the basic OCSP response does not parse: {e}"))?;
    let tbs = first_element(basic_der).map_err(|e| format!("the basic OCSP response: {e}"))?;
    let sig_alg = basic
        .signature_algorithm
        .to_der()
        .map_err(|e| e.to_string())
        .and_then(|d| content_of(&d).map(<[u8]>::to_vec))
        .map_err(|e| format!("the signature algorithm: {e}"))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("the signature is not a whole number of bytes")?;
    let signer = signer(pair, &basic, tbs, &sig_alg, signature, now, algs)?;

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| pair.matches(&s.cert_id))
        .ok_or("the response is not about this certificate (no matching CertID)")?;
    let secs = |t: &x509_ocsp::OcspGeneralizedTime| t.0.to_unix_duration().as_secs();
    let this_update = secs(&single.this_update);
    let next_update = single.next_update.as_ref().map(secs);
    if this_update > now + CLOCK_SKEW_SECS {
        return Err(format!(
            "thisUpdate is {}s in the future (more than the {CLOCK_SKEW_SECS}s allowed for clock skew)",
            this_update - now
        ));
    }
    if let Some(next) = next_update {
        if next < this_update {
            return Err("nextUpdate is before thisUpdate".into());
        }
        if next <= now {
            return Err(format!("the response expired {}s ago (nextUpdate)", now - next));
        }
    }
    let status = match &single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(info) => Status::Revoked {
            at: secs(&info.revocation_time),
        },
        CertStatus::Unknown(_) => Status::Unknown,
    };
    Ok(Verified {
        status,
        this_update,
        next_update,
        signer,
    })
}

/// Finds who signed `tbs`: the issuer itself, else a certificate in the
/// response that the issuer made an OCSP signer and that is valid now.
fn signer(
    pair: &CertPair,
    basic: &BasicOcspResponse,
    tbs: &[u8],
    sig_alg: &[u8],
    signature: &[u8],
    now: u64,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<String, String> {
    let issuer_der = CertificateDer::from(pair.issuer_der.as_slice());
    let issuer = webpki::EndEntityCert::try_from(&issuer_der)
        .map_err(|e| format!("the issuer certificate: {e}"))?;
    if signed_by(&issuer, tbs, sig_alg, signature, algs) {
        return Ok("issuer".into());
    }
    let anchor = webpki::anchor_from_trusted_cert(&issuer_der)
        .map_err(|e| format!("the issuer certificate: {e}"))?;
    let mut why = String::from("not signed by the issuer, and the response carries no responder certificate");
    for cert in basic.certs.iter().flatten() {
        let Ok(der) = cert.to_der() else { continue };
        let der = CertificateDer::from(der);
        let Ok(responder) = webpki::EndEntityCert::try_from(&der) else {
            continue;
        };
        let subject = cert.tbs_certificate.subject.to_string();
        if let Err(e) = responder.verify_for_usage(
            algs,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
            webpki::KeyUsage::required(KP_OCSP_SIGNING),
            None,
            None,
        ) {
            why = format!("the responder certificate \"{subject}\" is not an OCSP signer of the issuer: {e:?}");
            continue;
        }
        if signed_by(&responder, tbs, sig_alg, signature, algs) {
            return Ok(subject);
        }
        why = format!("the signature does not verify with the responder certificate \"{subject}\"");
    }
    Err(format!("the response signature is not trusted: {why}"))
}

fn signed_by(
    cert: &webpki::EndEntityCert<'_>,
    msg: &[u8],
    sig_alg: &[u8],
    signature: &[u8],
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> bool {
    algs.iter()
        .filter(|a| a.signature_alg_id().as_ref() == sig_alg)
        .any(|a| cert.verify_signature(*a, msg, signature).is_ok())
}

/// The bytes of the first element of a DER SEQUENCE, header included: the
/// signed tbsResponseData exactly as the responder encoded it.
fn first_element(der: &[u8]) -> Result<&[u8], String> {
    let mut r = SliceReader::new(der).map_err(|e| e.to_string())?;
    Header::decode(&mut r).map_err(|e| e.to_string())?;
    let h = r.peek_header().map_err(|e| e.to_string())?;
    let len = (h.encoded_len().map_err(|e| e.to_string())? + h.length).map_err(|e| e.to_string())?;
    r.read_slice(len).map_err(|e| e.to_string())
}

/// The contents of one DER element (after its tag and length).
fn content_of(der: &[u8]) -> Result<&[u8], String> {
    let mut r = SliceReader::new(der).map_err(|e| e.to_string())?;
    let h = Header::decode(&mut r).map_err(|e| e.to_string())?;
    let start = usize::try_from(h.encoded_len().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    der.get(start..).ok_or_else(|| "truncated".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_error_statuses_are_refused() {
        let (leaf, ca) = super::super::request::tests_support::ca_and_leaf();
        let pair = super::super::request::cert_pair(&[&leaf, &ca]).unwrap();
        let algs = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all;
        assert!(verify(b"", &pair, 0, algs).unwrap_err().contains("not an OCSP response"));
        // OCSPResponse { responseStatus tryLater (3) }
        let e = verify(&[0x30, 0x03, 0x0a, 0x01, 0x03], &pair, 0, algs).unwrap_err();
        assert!(e.contains("TryLater"), "{e}");
        // successful (0) without responseBytes
        let e = verify(&[0x30, 0x03, 0x0a, 0x01, 0x00], &pair, 0, algs).unwrap_err();
        assert!(e.contains("without a body"), "{e}");
    }

    #[test]
    fn first_element_and_content() {
        // SEQUENCE { SEQUENCE { INTEGER 5 }, NULL }
        let der = [0x30, 0x07, 0x30, 0x03, 0x02, 0x01, 0x05, 0x05, 0x00];
        assert_eq!(first_element(&der).unwrap(), &[0x30, 0x03, 0x02, 0x01, 0x05]);
        assert_eq!(content_of(&der[2..7]).unwrap(), &[0x02, 0x01, 0x05]);
        assert!(first_element(&[0x30, 0x05, 0x30]).is_err());
    }
}
