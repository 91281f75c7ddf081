//! What stapling needs from a site's certificate file, and the OCSP request
//! for it (RFC 6960 section 4.1): the leaf's serial, the issuer's name and
//! key hashes (SHA-1, the algorithm every responder answers), and the
//! responder URL from the leaf's Authority Information Access. Pure: bytes
//! in, bytes out.

use x509_cert::der::asn1::{Null, OctetString};
use x509_cert::der::oid::db::rfc5280::{ID_AD_OCSP, ID_PE_AUTHORITY_INFO_ACCESS};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{CertId, OcspRequest, Request, TbsRequest, Version};

/// SHA-1 (RFC 6960's CertID hash; OIW 1.3.14.3.2.26).
pub const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
pub const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
pub const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// The server certificate and its issuer, as stapling uses them.
#[derive(Clone)]
pub struct CertPair {
    /// DER of the leaf and of its issuer (from the same file's chain).
    pub leaf_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    /// DER of the leaf's serial number (INTEGER contents).
    pub serial: Vec<u8>,
    /// DER of the issuer's subject Name (= the leaf's issuer field).
    pub issuer_name: Vec<u8>,
    /// The issuer's subjectPublicKey BIT STRING contents.
    pub issuer_key: Vec<u8>,
    /// The first `id-ad-ocsp` URI in the leaf's AIA, if any.
    pub aia_ocsp_url: Option<String>,
    /// The leaf's notAfter (seconds since the epoch): a staple is never
    /// wanted past it.
    pub leaf_not_after: u64,
}

/// Finds the leaf's issuer in the chain (normally the next certificate) and
/// reads what the request and the response check need.
pub fn cert_pair(chain: &[&[u8]]) -> Result<CertPair, String> {
    let Some((leaf_der, rest)) = chain.split_first() else {
        return Err("the certificate file holds no certificate".into());
    };
    let leaf = Certificate::from_der(leaf_der)
        .map_err(|e| format!("the server certificate does not parse: {e}"))?;
    let issuer_name = leaf
        .tbs_certificate
        .issuer
        .to_der()
        .map_err(|e| format!("the server certificate's issuer does not encode: {e}"))?;
    let mut issuer = None;
    for der in rest {
        let Ok(c) = Certificate::from_der(der) else {
            continue;
        };
        if c.tbs_certificate.subject.to_der().ok().as_deref() == Some(&issuer_name[..]) {
            issuer = Some((der.to_vec(), c));
            break;
        }
    }
    let Some((issuer_der, issuer)) = issuer else {
        return Err(format!(
            "the certificate file has no issuer certificate for the server certificate (\"{}\"): OCSP stapling needs the chain with the issuing CA after the server certificate",
            leaf.tbs_certificate.issuer
        ));
    };
    let issuer_key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    Ok(CertPair {
        leaf_der: leaf_der.to_vec(),
        issuer_der,
        serial: leaf.tbs_certificate.serial_number.as_bytes().to_vec(),
        issuer_name,
        issuer_key,
        aia_ocsp_url: aia_ocsp_url(&leaf),
        leaf_not_after: leaf
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    })
}

/// The first `id-ad-ocsp` URI of the Authority Information Access extension.
fn aia_ocsp_url(cert: &Certificate) -> Option<String> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == ID_PE_AUTHORITY_INFO_ACCESS)?;
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()).ok()?;
    aia.0.iter().find_map(|d| match &d.access_location {
        GeneralName::UniformResourceIdentifier(uri) if d.access_method == ID_AD_OCSP => {
            Some(uri.as_str().to_string())
        }
        _ => None,
    })
}

/// The hash of `data` under a CertID hash algorithm we know.
pub fn digest(algorithm: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    let known = [
        (SHA1, &digest::SHA1_FOR_LEGACY_USE_ONLY),
        (SHA256, &digest::SHA256),
        (SHA384, &digest::SHA384),
        (SHA512, &digest::SHA512),
    ];
    let (_, alg) = known.iter().find(|(oid, _)| oid == algorithm)?;
    Some(digest::digest(alg, data).as_ref().to_vec())
}

impl CertPair {
    /// The CertID of the leaf with SHA-1, as sent in the request.
    pub fn cert_id(&self) -> Result<CertId, String> {
        let fail = |e: x509_cert::der::Error| format!("cannot encode the OCSP CertID: {e}");
        let sha1 = |d: &[u8]| digest(&SHA1, d).unwrap_or_default();
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: SHA1,
                parameters: Some(Any::from(Null)),
            },
            issuer_name_hash: OctetString::new(sha1(&self.issuer_name)).map_err(fail)?,
            issuer_key_hash: OctetString::new(sha1(&self.issuer_key)).map_err(fail)?,
            serial_number: x509_cert::serial_number::SerialNumber::new(&self.serial)
                .map_err(fail)?,
        })
    }

    /// The DER OCSP request: one CertID, unsigned, no nonce. No nonce
    /// because a stapled response is fetched ahead of the handshakes it
    /// serves and many responders serve pre-signed responses that cannot
    /// carry one (RFC 6960 section 4.4.1 makes it optional; RFC 8954).
    pub fn request_der(&self) -> Result<Vec<u8>, String> {
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: self.cert_id()?,
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        request
            .to_der()
            .map_err(|e| format!("cannot encode the OCSP request: {e}"))
    }

    /// Does `id` (from a response, with whatever hash the responder used)
    /// name this leaf?
    pub fn matches(&self, id: &CertId) -> bool {
        let alg = &id.hash_algorithm.oid;
        let (Some(name), Some(key)) = (
            digest(alg, &self.issuer_name),
            digest(alg, &self.issuer_key),
        ) else {
            return false;
        };
        id.issuer_name_hash.as_bytes() == name
            && id.issuer_key_hash.as_bytes() == key
            && id.serial_number.as_bytes() == self.serial
    }
}

/// Certificates for the unit tests of this module and of `verify`.
#[cfg(test)]
pub(super) mod tests_support {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };

    /// A CA, a leaf it issued, and their keys (PKCS#8 DER).
    pub(in crate::ocsp) struct Pki {
        pub ca: Vec<u8>,
        pub ca_key: Vec<u8>,
        pub leaf: Vec<u8>,
        ca_params: CertificateParams,
        ca_pair: KeyPair,
    }

    impl Pki {
        pub(in crate::ocsp) fn new(ocsp_url: Option<&str>) -> Pki {
            let ca_pair = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.distinguished_name.push(DnType::CommonName, "Test CA");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca.clone().self_signed(&ca_pair).unwrap();
            let leaf_key = KeyPair::generate().unwrap();
            let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            leaf.distinguished_name.push(DnType::CommonName, "leaf");
            leaf.serial_number = Some(vec![0x01, 0x23, 0x45].into());
            if let Some(url) = ocsp_url {
                leaf.custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                        aia_der(url),
                    ));
            }
            let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_pair).unwrap();
            Pki {
                ca: ca_cert.der().to_vec(),
                ca_key: ca_pair.serialize_der(),
                leaf: leaf_cert.der().to_vec(),
                ca_params: ca,
                ca_pair,
            }
        }

        /// A certificate this CA issued, with these extended key usages:
        /// (DER, PKCS#8 key).
        pub(in crate::ocsp) fn issue(
            &self,
            cn: &str,
            ekus: Vec<ExtendedKeyUsagePurpose>,
        ) -> (Vec<u8>, Vec<u8>) {
            let issuer = self.ca_params.clone().self_signed(&self.ca_pair).unwrap();
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = ekus;
            let cert = p.signed_by(&key, &issuer, &self.ca_pair).unwrap();
            (cert.der().to_vec(), key.serialize_der())
        }
    }

    /// A CA and a leaf issued by it, the leaf with an AIA OCSP URL when given.
    pub(in crate::ocsp) fn ca_and_leaf_with(ocsp_url: Option<&str>) -> (Vec<u8>, Vec<u8>) {
        let pki = Pki::new(ocsp_url);
        (pki.leaf, pki.ca)
    }

    /// AuthorityInfoAccessSyntax with one id-ad-ocsp URI, by hand.
    fn aia_der(url: &str) -> Vec<u8> {
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
        let mut uri = vec![0x86, url.len() as u8];
        uri.extend_from_slice(url.as_bytes());
        let mut desc = vec![0x30, (oid.len() + uri.len()) as u8];
        desc.extend_from_slice(&oid);
        desc.extend_from_slice(&uri);
        let mut out = vec![0x30, desc.len() as u8];
        out.extend_from_slice(&desc);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::ca_and_leaf_with as ca_and_leaf;
    use super::*;

    #[test]
    fn pair_reads_serial_issuer_and_aia() {
        let (leaf, ca) = ca_and_leaf(Some("http://127.0.0.1:2560/ocsp"));
        let pair = cert_pair(&[&leaf, &ca]).unwrap();
        assert_eq!(pair.serial, vec![0x01, 0x23, 0x45]);
        assert_eq!(
            pair.aia_ocsp_url.as_deref(),
            Some("http://127.0.0.1:2560/ocsp")
        );
        assert_eq!(pair.issuer_der, ca);
        let (leaf, ca) = ca_and_leaf(None);
        assert_eq!(cert_pair(&[&leaf, &ca]).unwrap().aia_ocsp_url, None);
    }

    #[test]
    fn a_chain_without_the_issuer_is_refused() {
        let (leaf, _) = ca_and_leaf(None);
        let (_, other_ca) = ca_and_leaf(None);
        let e = cert_pair(&[&leaf]).err().unwrap();
        assert!(e.contains("no issuer certificate"), "{e}");
        let e = cert_pair(&[&leaf, b"not der"]).err().unwrap();
        assert!(e.contains("no issuer certificate"), "{e}");
        assert!(cert_pair(&[]).is_err());
        // Another CA with the same name is taken by name here; the response
        // signature check (verify) is what refuses a stranger's key.
        let pair = cert_pair(&[&leaf, &other_ca]).unwrap();
        assert_eq!(pair.issuer_der, other_ca);
    }

    #[test]
    fn request_round_trips_and_matches_its_cert_id() {
        let (leaf, ca) = ca_and_leaf(None);
        let pair = cert_pair(&[&leaf, &ca]).unwrap();
        let der = pair.request_der().unwrap();
        let parsed = OcspRequest::from_der(&der).unwrap();
        let id = &parsed.tbs_request.request_list[0].req_cert;
        assert_eq!(id.hash_algorithm.oid, SHA1);
        assert_eq!(id.issuer_name_hash.as_bytes().len(), 20);
        assert!(pair.matches(id));
        // The same leaf named with SHA-256 hashes also matches.
        let mut id256 = id.clone();
        id256.hash_algorithm.oid = SHA256;
        id256.issuer_name_hash =
            OctetString::new(digest(&SHA256, &pair.issuer_name).unwrap()).unwrap();
        id256.issuer_key_hash =
            OctetString::new(digest(&SHA256, &pair.issuer_key).unwrap()).unwrap();
        assert!(pair.matches(&id256));
        // Another serial, or another issuer key, does not.
        let mut other = id.clone();
        other.serial_number = x509_cert::serial_number::SerialNumber::new(&[9]).unwrap();
        assert!(!pair.matches(&other));
        let mut other = id.clone();
        other.issuer_key_hash = OctetString::new(vec![0; 20]).unwrap();
        assert!(!pair.matches(&other));
        let mut other = id.clone();
        other.hash_algorithm.oid = ObjectIdentifier::new_unwrap("1.2.3.4");
        assert!(!pair.matches(&other));
    }
}
