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
    Revoked {
        at: u64,
    },
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
            return Err(format!(
                "the response expired {}s ago (nextUpdate)",
                now - next
            ));
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
    let mut why =
        String::from("not signed by the issuer, and the response carries no responder certificate");
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
    let len =
        (h.encoded_len().map_err(|e| e.to_string())? + h.length).map_err(|e| e.to_string())?;
    r.read_slice(len).map_err(|e| e.to_string())
}

/// The contents of one DER element (after its tag and length).
fn content_of(der: &[u8]) -> Result<&[u8], String> {
    let mut r = SliceReader::new(der).map_err(|e| e.to_string())?;
    let h = Header::decode(&mut r).map_err(|e| e.to_string())?;
    let start =
        usize::try_from(h.encoded_len().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    der.get(start..).ok_or_else(|| "truncated".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::request::tests_support::Pki;
    use super::super::request::{cert_pair, CertPair};
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use rcgen::ExtendedKeyUsagePurpose;
    use x509_cert::der::asn1::{BitString, GeneralizedTime, OctetString};
    use x509_cert::name::Name;
    use x509_cert::spki::AlgorithmIdentifierOwned;
    use x509_cert::Certificate;
    use x509_ocsp::{
        OcspGeneralizedTime, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
        Version,
    };

    const NOW: u64 = 1_800_000_000;

    fn algs() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all
    }

    fn time(secs: u64) -> OcspGeneralizedTime {
        OcspGeneralizedTime(
            GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs)).unwrap(),
        )
    }

    /// What one test response says, and who signs it.
    struct Spec<'a> {
        status: CertStatus,
        this_update: u64,
        next_update: Option<u64>,
        signer_key: &'a [u8],
        certs: Vec<Vec<u8>>,
        pair: &'a CertPair,
    }

    impl<'a> Spec<'a> {
        fn good(pair: &'a CertPair, signer_key: &'a [u8]) -> Spec<'a> {
            Spec {
                status: CertStatus::good(),
                this_update: NOW - 60,
                next_update: Some(NOW + 3600),
                signer_key,
                certs: Vec::new(),
                pair,
            }
        }

        /// The DER OCSPResponse, ECDSA P-256 signed by `signer_key`.
        fn build(&self) -> Vec<u8> {
            let data = ResponseData {
                version: Version::V1,
                responder_id: ResponderId::ByName(Name::from_der(&self.pair.issuer_name).unwrap()),
                produced_at: time(self.this_update),
                responses: vec![SingleResponse {
                    cert_id: self.pair.cert_id().unwrap(),
                    cert_status: self.status,
                    this_update: time(self.this_update),
                    next_update: self.next_update.map(time),
                    single_extensions: None,
                }],
                response_extensions: None,
            };
            let tbs = data.to_der().unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, self.signer_key).unwrap();
            let sig = key.sign(&SystemRandom::new(), &tbs).unwrap();
            let basic = BasicOcspResponse {
                tbs_response_data: data,
                signature_algorithm: AlgorithmIdentifierOwned {
                    oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
                    parameters: None,
                },
                signature: BitString::from_bytes(sig.as_ref()).unwrap(),
                certs: if self.certs.is_empty() {
                    None
                } else {
                    Some(
                        self.certs
                            .iter()
                            .map(|c| Certificate::from_der(c).unwrap())
                            .collect(),
                    )
                },
            };
            OcspResponse {
                response_status: OcspResponseStatus::Successful,
                response_bytes: Some(ResponseBytes {
                    response_type: OCSP_BASIC,
                    response: OctetString::new(basic.to_der().unwrap()).unwrap(),
                }),
            }
            .to_der()
            .unwrap()
        }
    }

    fn setup() -> (Pki, CertPair) {
        let pki = Pki::new(None);
        let pair = cert_pair(&[&pki.leaf, &pki.ca]).unwrap();
        (pki, pair)
    }

    #[test]
    fn good_signed_by_the_issuer() {
        let (pki, pair) = setup();
        let v = verify(&Spec::good(&pair, &pki.ca_key).build(), &pair, NOW, algs()).unwrap();
        assert_eq!(v.status, Status::Good);
        assert_eq!((v.this_update, v.next_update), (NOW - 60, Some(NOW + 3600)));
        assert_eq!(v.signer, "issuer");
    }

    #[test]
    fn revoked_is_reported_with_its_time() {
        let (pki, pair) = setup();
        let mut spec = Spec::good(&pair, &pki.ca_key);
        spec.status = CertStatus::Revoked(RevokedInfo {
            revocation_time: time(NOW - 500),
            revocation_reason: None,
        });
        let v = verify(&spec.build(), &pair, NOW, algs()).unwrap();
        assert_eq!(v.status, Status::Revoked { at: NOW - 500 });
    }

    #[test]
    fn a_delegated_responder_needs_the_ocsp_signing_usage_from_the_issuer() {
        let (pki, pair) = setup();
        let (responder, responder_key) =
            pki.issue("responder", vec![ExtendedKeyUsagePurpose::OcspSigning]);
        let mut spec = Spec::good(&pair, &responder_key);
        spec.certs = vec![responder.clone()];
        // (rcgen's default validity, 1975 to 4096, covers NOW.)
        let now = NOW;
        let v = verify(&spec.build(), &pair, now, algs()).unwrap();
        assert_eq!(v.signer, "CN=responder");

        // Without id-kp-OCSPSigning: refused.
        let (plain, plain_key) = pki.issue("plain", vec![ExtendedKeyUsagePurpose::ServerAuth]);
        spec.signer_key = &plain_key;
        spec.certs = vec![plain];
        let e = verify(&spec.build(), &pair, now, algs()).unwrap_err();
        assert!(e.contains("not an OCSP signer"), "{e}");

        // An OCSP signer from another CA: refused.
        let other = Pki::new(None);
        let (stranger, stranger_key) =
            other.issue("stranger", vec![ExtendedKeyUsagePurpose::OcspSigning]);
        spec.signer_key = &stranger_key;
        spec.certs = vec![stranger];
        let e = verify(&spec.build(), &pair, now, algs()).unwrap_err();
        assert!(e.contains("not an OCSP signer"), "{e}");

        // The right certificate attached, but signed by another key.
        spec.certs = vec![responder];
        let e = verify(&spec.build(), &pair, now, algs()).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn a_response_signed_by_another_ca_or_altered_is_refused() {
        let (_, pair) = setup();
        let other = Pki::new(None);
        let e = verify(
            &Spec::good(&pair, &other.ca_key).build(),
            &pair,
            NOW,
            algs(),
        )
        .unwrap_err();
        assert!(e.contains("not trusted"), "{e}");

        let (pki, pair) = setup();
        let mut der = Spec::good(&pair, &pki.ca_key).build();
        // Flip the last byte of the serial inside the signed data.
        let at = der
            .windows(3)
            .position(|w| w == [0x01, 0x23, 0x45])
            .unwrap();
        der[at + 2] ^= 1;
        assert!(verify(&der, &pair, NOW, algs()).is_err());
    }

    #[test]
    fn a_response_about_another_certificate_is_refused() {
        let (pki, pair) = setup();
        let der = Spec::good(&pair, &pki.ca_key).build();
        let mut other = pair.clone();
        other.serial = vec![0x09];
        let e = verify(&der, &other, NOW, algs()).unwrap_err();
        assert!(e.contains("not about this certificate"), "{e}");
    }

    #[test]
    fn times_must_be_sane() {
        let (pki, pair) = setup();
        let mut spec = Spec::good(&pair, &pki.ca_key);
        spec.next_update = Some(NOW);
        let e = verify(&spec.build(), &pair, NOW, algs()).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        spec.this_update = NOW + CLOCK_SKEW_SECS + 10;
        spec.next_update = Some(NOW + 7200);
        let e = verify(&spec.build(), &pair, NOW, algs()).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
        // Within the skew is fine; no nextUpdate is fine.
        spec.this_update = NOW + 60;
        spec.next_update = None;
        let v = verify(&spec.build(), &pair, NOW, algs()).unwrap();
        assert_eq!(v.next_update, None);
        spec.this_update = NOW - 10;
        spec.next_update = Some(NOW - 20);
        assert!(verify(&spec.build(), &pair, NOW, algs()).is_err());
    }

    #[test]
    fn garbage_and_error_statuses_are_refused() {
        let (_, pair) = setup();
        assert!(verify(b"", &pair, 0, algs())
            .unwrap_err()
            .contains("not an OCSP response"));
        // OCSPResponse { responseStatus tryLater (3) }
        let e = verify(&[0x30, 0x03, 0x0a, 0x01, 0x03], &pair, 0, algs()).unwrap_err();
        assert!(e.contains("TryLater"), "{e}");
        // successful (0) without responseBytes
        let e = verify(&[0x30, 0x03, 0x0a, 0x01, 0x00], &pair, 0, algs()).unwrap_err();
        assert!(e.contains("without a body"), "{e}");
    }

    #[test]
    fn first_element_and_content() {
        // SEQUENCE { SEQUENCE { INTEGER 5 }, NULL }
        let der = [0x30, 0x07, 0x30, 0x03, 0x02, 0x01, 0x05, 0x05, 0x00];
        assert_eq!(
            first_element(&der).unwrap(),
            &[0x30, 0x03, 0x02, 0x01, 0x05]
        );
        assert_eq!(content_of(&der[2..7]).unwrap(), &[0x02, 0x01, 0x05]);
        assert!(first_element(&[0x30, 0x05, 0x30]).is_err());
    }
}
