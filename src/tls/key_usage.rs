//! The keyUsage extension (RFC 5280 §4.2.1.3), read straight from a
//! certificate's DER.
//!
//! The client verifier needs two bits of it on every handshake (the leaf's
//! digitalSignature, each intermediate's keyCertSign). webpki parses keyUsage
//! but keeps it private, and x509-parser would build a whole certificate tree
//! (names, extensions, allocations) to answer a two-bit question. This walks
//! the handful of DER headers in front of the extensions instead: no
//! allocation, a few dozen byte comparisons. It runs only on certificates
//! webpki has already parsed, but it trusts nothing: every length is checked.
//! Pure: no I/O.

/// The keyUsage bits of a certificate that carries the extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUsage {
    /// Bit `i` of the RFC 5280 KeyUsage BIT STRING is `1 << i` here.
    bits: u16,
}

impl KeyUsage {
    const DIGITAL_SIGNATURE: u16 = 1 << 0;
    const KEY_CERT_SIGN: u16 = 1 << 5;
    /// decipherOnly is bit 8, the last one RFC 5280 defines.
    const NAMED_BITS: usize = 9;

    pub fn digital_signature(self) -> bool {
        self.bits & Self::DIGITAL_SIGNATURE != 0
    }

    pub fn key_cert_sign(self) -> bool {
        self.bits & Self::KEY_CERT_SIGN != 0
    }
}

/// The certificate (or its keyUsage) is not the DER it claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
/// `extensions [3] EXPLICIT Extensions` in the TBSCertificate; no other
/// TBSCertificate field uses this tag.
const EXTENSIONS: u8 = 0xA3;
/// id-ce-keyUsage, 2.5.29.15, as the contents of its OID.
const ID_CE_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];

/// The keyUsage of the certificate `cert_der`; `Ok(None)` when it has no
/// keyUsage extension (RFC 5280: then every use is allowed).
pub fn key_usage(cert_der: &[u8]) -> Result<Option<KeyUsage>, Malformed> {
    let mut outer = Reader(cert_der);
    let certificate = outer.expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err(Malformed("data after the certificate"));
    }
    let tbs = Reader(certificate).expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut fields = Reader(tbs);
    while !fields.is_empty() {
        let (tag, value) = fields.next()?;
        if tag == EXTENSIONS {
            return extensions_key_usage(value);
        }
    }
    Ok(None)
}

/// Finds keyUsage among the Extensions (`[3]`'s contents).
fn extensions_key_usage(explicit: &[u8]) -> Result<Option<KeyUsage>, Malformed> {
    let mut wrapper = Reader(explicit);
    let list = wrapper.expect(SEQUENCE, "extensions are not a SEQUENCE")?;
    if !wrapper.is_empty() {
        return Err(Malformed("data after the extensions"));
    }
    let mut extensions = Reader(list);
    let mut found = None;
    while !extensions.is_empty() {
        let mut extension = Reader(extensions.expect(SEQUENCE, "an extension is not a SEQUENCE")?);
        let id = extension.expect(OID, "an extension has no OID")?;
        if extension.peek_tag() == Some(BOOLEAN) {
            extension.next()?; // critical: keyUsage means the same either way
        }
        let value = extension.expect(OCTET_STRING, "an extension value is not an OCTET STRING")?;
        if !extension.is_empty() {
            return Err(Malformed("data after an extension value"));
        }
        if id == ID_CE_KEY_USAGE {
            // RFC 5280 §4.2: an extension appears at most once. Two keyUsage
            // values could say different things to different parsers.
            if found.is_some() {
                return Err(Malformed("keyUsage appears twice"));
            }
            found = Some(parse_bits(value)?);
        }
    }
    Ok(found)
}

/// The extnValue of keyUsage: one BIT STRING, bit 0 first (the high bit of
/// its first byte).
fn parse_bits(extn_value: &[u8]) -> Result<KeyUsage, Malformed> {
    let mut value = Reader(extn_value);
    let bit_string = value.expect(BIT_STRING, "keyUsage is not a BIT STRING")?;
    if !value.is_empty() {
        return Err(Malformed("data after the keyUsage BIT STRING"));
    }
    let Some((&unused, bytes)) = bit_string.split_first() else {
        return Err(Malformed("keyUsage BIT STRING has no length octet"));
    };
    if unused > 7 || (bytes.is_empty() && unused != 0) {
        return Err(Malformed("keyUsage BIT STRING has a bad unused-bits count"));
    }
    let total_bits = bytes.len() * 8 - usize::from(unused);
    let mut bits = 0u16;
    for i in 0..total_bits.min(KeyUsage::NAMED_BITS) {
        if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
            bits |= 1 << i;
        }
    }
    Ok(KeyUsage { bits })
}

/// A cursor over DER TLVs with single-byte tags (all that X.509 uses here).
/// Also used by `client_verifier::validity`, which walks the same
/// TBSCertificate for its validity times.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next TLV's tag and contents.
    pub(super) fn next(&mut self) -> Result<(u8, &'a [u8]), Malformed> {
        let [tag, first_len, rest @ ..] = self.0 else {
            return Err(Malformed("truncated DER header"));
        };
        if tag & 0x1f == 0x1f {
            return Err(Malformed("multi-byte DER tag"));
        }
        let (len, rest) = if first_len & 0x80 == 0 {
            (usize::from(*first_len), rest)
        } else {
            let n = usize::from(first_len & 0x7f);
            // Four length bytes cover 4 GiB; more, or the indefinite form
            // (n = 0, BER only), is not a certificate.
            if n == 0 || n > 4 || rest.len() < n {
                return Err(Malformed("bad DER length"));
            }
            let (len_bytes, rest) = rest.split_at(n);
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            // DER: the shortest form only.
            if len_bytes[0] == 0 || len < 0x80 {
                return Err(Malformed("non-minimal DER length"));
            }
            (len, rest)
        };
        if rest.len() < len {
            return Err(Malformed("DER value runs past its container"));
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((*tag, value))
    }

    /// The next TLV's contents, which must carry `tag`.
    pub(super) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], Malformed> {
        match self.next()? {
            (t, value) if t == tag => Ok(value),
            _ => Err(Malformed(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER TLV with a short or long length, for building test inputs.
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n <= 0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(value);
        out
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn extension(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let mut body = tlv(OID, id);
        if critical {
            body.extend([0x01, 0x01, 0xff]);
        }
        body.extend(tlv(OCTET_STRING, value));
        tlv(SEQUENCE, &body)
    }

    /// A certificate-shaped DER: the TBSCertificate fields before the
    /// extensions are stand-ins of the right tags (the walker only skips them).
    fn cert_with(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
        let version = tlv(0xA0, &[0x02, 0x01, 0x02]);
        let serial = tlv(0x02, &[0x01]);
        let alg = tlv(
            SEQUENCE,
            &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let name = tlv(SEQUENCE, b"");
        let validity = tlv(SEQUENCE, b"");
        let spki = tlv(SEQUENCE, &[0u8; 200]); // forces a long-form length above
        let mut tbs = cat(&[&version, &serial, &alg, &name, &validity, &name, &spki]);
        if let Some(exts) = extensions {
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &exts.concat())));
        }
        let tbs = tlv(SEQUENCE, &tbs);
        tlv(
            SEQUENCE,
            &cat(&[&tbs, &alg, &tlv(BIT_STRING, &[0x00, 0x01])]),
        )
    }

    fn ku(bits: &[u8]) -> Vec<u8> {
        extension(ID_CE_KEY_USAGE, true, &tlv(BIT_STRING, bits))
    }

    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];

    #[test]
    fn no_extensions_or_no_key_usage_is_none() {
        assert_eq!(key_usage(&cert_with(None)), Ok(None));
        let bc = extension(BASIC_CONSTRAINTS, true, &tlv(SEQUENCE, &[0x01, 0x01, 0xff]));
        assert_eq!(key_usage(&cert_with(Some(&[bc]))), Ok(None));
    }

    #[test]
    fn reads_named_bits_high_bit_first() {
        // 03 02 07 80: one bit used, digitalSignature.
        let k = key_usage(&cert_with(Some(&[ku(&[0x07, 0x80])])))
            .unwrap()
            .unwrap();
        assert!(k.digital_signature() && !k.key_cert_sign());
        // 03 02 06 40: nonRepudiation (bit 1) only.
        let k = key_usage(&cert_with(Some(&[ku(&[0x06, 0x40])])))
            .unwrap()
            .unwrap();
        assert!(!k.digital_signature() && !k.key_cert_sign());
        // 03 02 01 06: keyCertSign (bit 5) + cRLSign (bit 6).
        let k = key_usage(&cert_with(Some(&[ku(&[0x01, 0x06])])))
            .unwrap()
            .unwrap();
        assert!(k.key_cert_sign() && !k.digital_signature());
        // 03 02 05 A0: digitalSignature + keyEncipherment, after another extension.
        let bc = extension(BASIC_CONSTRAINTS, false, &tlv(SEQUENCE, b""));
        let k = key_usage(&cert_with(Some(&[bc, ku(&[0x05, 0xA0])])))
            .unwrap()
            .unwrap();
        assert!(k.digital_signature());
        // decipherOnly in a second byte does not disturb the first.
        let k = key_usage(&cert_with(Some(&[ku(&[0x07, 0x04, 0x80])])))
            .unwrap()
            .unwrap();
        assert!(k.key_cert_sign() && !k.digital_signature());
    }

    #[test]
    fn unused_bits_are_not_read() {
        // The low bit of the last byte is marked unused, so it is not set.
        let k = key_usage(&cert_with(Some(&[ku(&[0x03, 0x04])])))
            .unwrap()
            .unwrap();
        assert!(!k.key_cert_sign());
        // An empty BIT STRING: the extension is present and allows nothing.
        let k = key_usage(&cert_with(Some(&[ku(&[0x00])])))
            .unwrap()
            .unwrap();
        assert!(!k.digital_signature() && !k.key_cert_sign());
    }

    #[test]
    fn non_critical_key_usage_still_counts() {
        let e = extension(ID_CE_KEY_USAGE, false, &tlv(BIT_STRING, &[0x06, 0x40]));
        let k = key_usage(&cert_with(Some(&[e]))).unwrap().unwrap();
        assert!(!k.digital_signature());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = cert_with(Some(&[ku(&[0x07, 0x80])]));
        // Every truncation of a valid certificate fails cleanly.
        for n in 0..good.len() {
            assert!(key_usage(&good[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(key_usage(&trailing).is_err());
        // Twice keyUsage.
        assert_eq!(
            key_usage(&cert_with(Some(&[ku(&[0x07, 0x80]), ku(&[0x06, 0x40])]))),
            Err(Malformed("keyUsage appears twice"))
        );
        // Bad unused-bits counts.
        assert!(key_usage(&cert_with(Some(&[ku(&[0x08, 0x80])]))).is_err());
        assert!(key_usage(&cert_with(Some(&[ku(&[0x01])]))).is_err());
        assert!(key_usage(&cert_with(Some(&[ku(&[])]))).is_err());
        // keyUsage that is not a BIT STRING.
        let e = extension(ID_CE_KEY_USAGE, true, &tlv(OCTET_STRING, &[0x07, 0x80]));
        assert!(key_usage(&cert_with(Some(&[e]))).is_err());
        // Non-minimal and indefinite lengths.
        assert!(Reader(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).next().is_err());
        assert!(Reader(&[0x30, 0x80, 0x00, 0x00]).next().is_err());
        assert!(Reader(&[0x30, 0x82, 0x00, 0x80]).next().is_err());
        assert!(Reader(&[0x1f, 0x01, 0x00]).next().is_err());
        // A length past the end.
        assert!(Reader(&[0x04, 0x05, 1, 2]).next().is_err());
    }

    /// Real certificates, cross-checked with x509-parser's reading.
    #[test]
    fn agrees_with_x509_parser_on_rcgen_certificates() {
        use rcgen::{CertificateParams, KeyPair, KeyUsagePurpose as P};
        use x509_parser::prelude::{FromDer, X509Certificate};
        let key = KeyPair::generate().unwrap();
        let cases: &[&[P]] = &[
            &[],
            &[P::DigitalSignature],
            &[P::ContentCommitment],
            &[P::KeyCertSign, P::CrlSign],
            &[P::DigitalSignature, P::KeyEncipherment, P::DecipherOnly],
            &[P::KeyAgreement],
        ];
        for usages in cases {
            let mut params = CertificateParams::new(vec!["x.test".into()]).unwrap();
            params.key_usages = usages.to_vec();
            let der = params.self_signed(&key).unwrap().der().to_vec();
            let ours = key_usage(&der).unwrap();
            let (_, parsed) = X509Certificate::from_der(&der).unwrap();
            let theirs = parsed.key_usage().unwrap().map(|e| *e.value);
            assert_eq!(ours.is_some(), theirs.is_some(), "{usages:?}");
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                assert_eq!(
                    ours.digital_signature(),
                    theirs.digital_signature(),
                    "{usages:?}"
                );
                assert_eq!(ours.key_cert_sign(), theirs.key_cert_sign(), "{usages:?}");
                assert_eq!(ours.bits, theirs.flags, "{usages:?}");
            }
        }
    }
}
