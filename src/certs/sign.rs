//! How one certificate is made: key generation, serial numbers, validity
//! windows, the dev CA's parameters and the signing of a leaf. The rest of
//! `certs` decides which certificates to make and where they are written.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::{CertError, KeyType, LeafKind};

/// The signing side of a leaf: rcgen's view of the CA plus the CA as it is
/// written in files.
pub(super) struct Issuer<'a> {
    pub(super) cert: &'a Certificate,
    pub(super) key: &'a KeyPair,
    pub(super) der: &'a CertificateDer<'static>,
    /// One PEM block, ending in a newline.
    pub(super) pem: String,
}

pub(super) struct LeafSpec<'a> {
    pub(super) common_name: &'a str,
    pub(super) names: &'a [String],
    pub(super) uris: &'a [String],
    pub(super) key_type: KeyType,
    pub(super) validity: Validity,
    pub(super) kind: LeafKind,
}

pub(super) struct IssuedLeaf {
    pub(super) cert: Certificate,
    pub(super) key: KeyPair,
    pub(super) kind: LeafKind,
    pub(super) common_name: String,
}

impl LeafSpec<'_> {
    pub(super) fn sign(&self, issuer: &Issuer<'_>) -> Result<IssuedLeaf, CertError> {
        let key = generate_key(self.key_type)?;
        // `new` turns IP literals into IP SANs and the rest into DNS SANs.
        let mut params = CertificateParams::new(self.names.to_vec()).map_err(generate_error)?;
        for uri in self.uris {
            check_uri(uri)?;
            let ia5 = uri.as_str().try_into().map_err(|_| CertError::Uri {
                uri: uri.clone(),
                reason: "only ASCII characters can go into a certificate (percent-encode the rest)",
            })?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.key_type == KeyType::Rsa2048 {
            // TLS 1.2 RSA key exchange encrypts to the key.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![match self.kind {
            LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
            LeafKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = self.validity.not_before;
        params.not_after = self.validity.not_after;
        let cert = params
            .signed_by(&key, issuer.cert, issuer.key)
            .map_err(generate_error)?;
        Ok(IssuedLeaf {
            cert,
            key,
            kind: self.kind,
            common_name: self.common_name.to_string(),
        })
    }
}

/// RFC 5280 wants an absolute URI: a scheme, a colon, then no spaces.
fn check_uri(uri: &str) -> Result<(), CertError> {
    let bad = |reason| {
        Err(CertError::Uri {
            uri: uri.to_string(),
            reason,
        })
    };
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("not an absolute URI (expected scheme:..., like spiffe://example.org/service)");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return bad("not an absolute URI (expected scheme:..., like spiffe://example.org/service)");
    }
    if rest.is_empty() {
        return bad("nothing follows the scheme");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("a URI cannot contain spaces or control characters");
    }
    Ok(())
}

pub(super) fn ca_params(days: u32) -> Result<CertificateParams, CertError> {
    let validity = Validity::from_now(days)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A random suffix makes every dev CA's name unique, so a certificate from
    // another dev CA is reported as "not signed by a trusted CA" (unknown
    // issuer) rather than as a signature that fails under a same-named CA.
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag)
        .map_err(|_| CertError::Generate("the system random generator failed".into()))?;
    let suffix: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Portcullis Dev CA {suffix}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

pub(super) fn generate_key(key_type: KeyType) -> Result<KeyPair, CertError> {
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyType::Ed25519 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error)?;
            return match ed25519_pkcs8_v1(key.serialized_der()) {
                Some(v1) => KeyPair::from_pkcs8_der_and_sign_algo(
                    &PrivatePkcs8KeyDer::from(v1),
                    &rcgen::PKCS_ED25519,
                )
                .map_err(generate_error),
                None => Ok(key),
            };
        }
    }
    .map_err(generate_error)
}

/// aws-lc writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key),
/// which OpenSSL 3.0 refuses to load ("unsupported"). The v1 form holds the
/// same private key and every consumer reads it, rustls included.
/// None if the input is not laid out as expected (then it is kept as is).
fn ed25519_pkcs8_v1(v2: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { INTEGER 1, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } ...
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // The same with version 0 and the outer length of a body without the public key.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = v2.strip_prefix(&V2_PREFIX)?.get(..32)?;
    Some([&V1_PREFIX[..], seed].concat())
}

pub(super) fn generate_error(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

/// 16 random bytes, positive and without a leading zero byte, so every
/// serial has the same length (RFC 5280 allows up to 20).
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| CertError::Generate("the system random generator failed".into()))?;
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

pub(super) struct Validity {
    pub(super) not_before: time::OffsetDateTime,
    pub(super) not_after: time::OffsetDateTime,
}

impl Validity {
    /// From an hour ago, so a peer whose clock runs a little behind still
    /// accepts it, until `days` from now.
    pub(super) fn from_now(days: u32) -> Result<Validity, CertError> {
        if days == 0 {
            return Err(CertError::Generate(
                "validity must be at least 1 day".into(),
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let not_after = now
            .checked_add(time::Duration::days(i64::from(days)))
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| CertError::Generate(format!("validity of {days} days is too long")))?;
        Ok(Validity {
            not_before: now - time::Duration::hours(1),
            not_after,
        })
    }

    pub(super) fn expired() -> Result<Validity, CertError> {
        let now = time::OffsetDateTime::now_utc();
        Ok(Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        })
    }
}
