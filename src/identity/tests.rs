use super::*;

// XFCC quoting against certificates built to break out of it.
mod xfcc_quoting;

use rcgen::{
    BasicConstraints, BmpString, Certificate, CertificateParams, DistinguishedName, DnType,
    DnValue, Ia5String, IsCa, KeyPair, SanType, TeletexString, UniversalString,
};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis Test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf signed by `ca` with the given subject (in DER order) and SANs.
fn leaf(ca: &Ca, dn: Vec<(DnType, DnValue)>, sans: Vec<SanType>) -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for (ty, value) in dn {
        params.distinguished_name.push(ty, value);
    }
    params.subject_alt_names = sans;
    params
        .signed_by(&key, &ca.cert, &ca.key)
        .unwrap()
        .der()
        .clone()
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(Ia5String::try_from(s).unwrap())
}

fn uri(s: &str) -> SanType {
    SanType::URI(Ia5String::try_from(s).unwrap())
}

fn utf8(s: &str) -> DnValue {
    DnValue::Utf8String(s.to_string())
}

const SPIFFE: &str = "spiffe://example.org/ns/prod/sa/api";

/// CA-signed leaf: CN "alice", O "Example, Inc.", SAN DNS
/// "Client.Example.com", SAN URI SPIFFE; returned with its chain.
fn alice() -> (Ca, Vec<CertificateDer<'static>>) {
    let ca = ca();
    let ee = leaf(
        &ca,
        vec![
            (DnType::OrganizationName, utf8("Example, Inc.")),
            (DnType::CommonName, utf8("alice")),
        ],
        vec![dns("Client.Example.com"), uri(SPIFFE)],
    );
    let chain = vec![ee, ca.cert.der().clone()];
    (ca, chain)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn from_chain_reads_the_end_entity() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    assert_eq!(cert.subject, r"CN=alice,O=Example\, Inc.");
    assert_eq!(cert.common_names, vec!["alice"]);
    assert_eq!(cert.dns_names, vec!["client.example.com"]);
    assert_eq!(cert.uris, vec![SPIFFE]);

    let expected = digest::digest(&digest::SHA256, &chain[0]);
    assert_eq!(&cert.sha256[..], expected.as_ref());
    let hex = cert.fingerprint_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(parse_fingerprint(&hex).unwrap(), cert.sha256);
}

#[test]
fn from_chain_rejects_empty_and_unparsable_chains() {
    assert_eq!(ClientCert::from_chain(&[]), None);
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert_eq!(ClientCert::from_chain(&[garbage]), None);

    // A certificate followed by trailing bytes is not a certificate.
    let (_ca, chain) = alice();
    let mut trailing = chain[0].to_vec();
    trailing.push(0);
    assert_eq!(
        ClientCert::from_chain(&[CertificateDer::from(trailing)]),
        None
    );
}

#[test]
fn from_chain_without_sans_or_intermediates() {
    let ca = ca();
    let ee = leaf(&ca, vec![(DnType::CommonName, utf8("bob"))], vec![]);
    let cert = ClientCert::from_chain(&[ee]).unwrap();
    assert_eq!(cert.subject, "CN=bob");
    assert!(cert.dns_names.is_empty() && cert.uris.is_empty());
    assert_eq!(rfc9440_client_cert_chain(&[]), None);
    assert_eq!(
        xfcc(&cert),
        format!("Hash={};Subject=\"CN=bob\"", cert.fingerprint_hex())
    );
}

#[test]
fn sans_that_could_split_a_header_are_dropped() {
    let ca = ca();
    let ee = leaf(
        &ca,
        vec![(DnType::CommonName, utf8("mallory"))],
        vec![
            dns("evil.example.com\r\nX-Admin: 1"),
            dns("ok.example.com"),
            uri("spiffe://example.org/a b"),
            uri("spiffe://example.org/ok"),
        ],
    );
    let cert = ClientCert::from_chain(&[ee]).unwrap();
    assert_eq!(cert.dns_names, vec!["ok.example.com"]);
    assert_eq!(cert.uris, vec!["spiffe://example.org/ok"]);
}

#[test]
fn subject_escaping_through_a_certificate() {
    let ca = ca();
    let ee = leaf(
        &ca,
        vec![
            (
                DnType::CountryName,
                DnValue::PrintableString("US".try_into().unwrap()),
            ),
            (
                DnType::OrganizationName,
                utf8("#1 <Corp>; \"quoted\"+more\\ "),
            ),
            (
                DnType::OrganizationalUnitName,
                DnValue::BmpString(BmpString::try_from("Zoë").unwrap()),
            ),
            (
                DnType::LocalityName,
                DnValue::UniversalString(UniversalString::try_from("Köln").unwrap()),
            ),
            (
                DnType::StateOrProvinceName,
                DnValue::TeletexString(TeletexString::try_from("abc").unwrap()),
            ),
            (DnType::CustomDnType(vec![1, 2, 3, 4]), utf8("x")),
            (DnType::CommonName, utf8(" tab\there ")),
        ],
        vec![],
    );
    let cert = ClientCert::from_chain(&[ee]).unwrap();
    assert_eq!(
        cert.subject,
        concat!(
            r"CN=\ tab\09here\ ,",
            r"1.2.3.4=#0C0178,",
            "ST=abc,",
            r"L=K\C3\B6ln,",
            r"OU=Zo\C3\AB,",
            r#"O=\#1 \<Corp\>\; \"quoted\"\+more\\\ ,"#,
            "C=US",
        )
    );
    assert_eq!(cert.common_names, vec![" tab\there "]);
    assert!(cert
        .subject
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' '));
}

#[test]
fn subject_with_a_multi_valued_rdn() {
    // SEQUENCE { SET { CN=a, OU=b }, SET { O=o (PrintableString) } }
    let der = [
        0x30, 0x22, //
        0x31, 0x14, //
        0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a', //
        0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x0b, 0x0c, 0x01, b'b', //
        0x31, 0x0a, //
        0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x01, b'o',
    ];
    let (rest, name) = X509Name::from_der(&der).unwrap();
    assert!(rest.is_empty());
    assert_eq!(rfc4514(&name).unwrap(), "O=o,CN=a+OU=b");
}

#[test]
fn non_string_values_are_hex() {
    // SEQUENCE { SET { CN = INTEGER 5 } }: a known type without a string value.
    let der = [
        0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x02, 0x01, 0x05,
    ];
    let (_, name) = X509Name::from_der(&der).unwrap();
    assert_eq!(rfc4514(&name).unwrap(), "CN=#020105");
}

#[test]
fn escaping_edge_cases() {
    let esc = |v: &str| {
        let mut out = String::new();
        push_escaped(&mut out, v);
        out
    };
    assert_eq!(esc(""), "");
    assert_eq!(esc(" "), r"\ ");
    assert_eq!(esc("  "), r"\ \ ");
    assert_eq!(esc("a b"), "a b");
    assert_eq!(esc("a#b="), "a#b=");
    assert_eq!(esc("#"), r"\#");
    assert_eq!(esc("\0"), r"\00");
    assert_eq!(esc("\x7f"), r"\7F");
}

#[test]
fn escaped_pem_vector() {
    // base64 of FB FF is "+/8=": all three characters need escaping.
    assert_eq!(
        escaped_pem(&[0xfb, 0xff]),
        "-----BEGIN%20CERTIFICATE-----%0A%2B%2F8%3D%0A-----END%20CERTIFICATE-----%0A"
    );
    assert_eq!(
        pem(&[0u8; 48]),
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "A".repeat(64)
        )
    );
    assert_eq!(
        pem(&[0u8; 49]),
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\nAA==\n-----END CERTIFICATE-----\n",
            "A".repeat(64)
        )
    );
}

#[test]
fn escaped_pem_round_trips() {
    let (_ca, chain) = alice();
    let der = chain[0].as_ref();
    let escaped = escaped_pem(der);
    assert!(!escaped.contains(['\n', '+', '/', '=', ' ']));
    assert!(escaped
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));

    let b64 = BASE64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let expected = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    assert_eq!(percent_decode(&escaped), expected.as_bytes());
}

#[test]
fn rfc9440_forms() {
    assert_eq!(rfc9440_client_cert(&[0xfb, 0xff]), ":+/8=:");
    assert_eq!(rfc9440_client_cert(&[]), "::");

    let (ca, chain) = alice();
    let value = rfc9440_client_cert(&chain[0]);
    let inner = value.strip_prefix(':').unwrap().strip_suffix(':').unwrap();
    assert_eq!(BASE64.decode(inner).unwrap(), chain[0].as_ref());

    let two = [
        CertificateDer::from(vec![0xfb, 0xff]),
        ca.cert.der().clone(),
    ];
    assert_eq!(
        rfc9440_client_cert_chain(&two).unwrap(),
        format!(":+/8=:, :{}:", BASE64.encode(ca.cert.der()))
    );
    assert_eq!(rfc9440_client_cert_chain(&[]), None);
}

#[test]
fn xfcc_element() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    assert_eq!(
        xfcc(&cert),
        format!(
            "Hash={};Subject=\"CN=alice,O=Example\\\\, Inc.\";\
             URI=spiffe://example.org/ns/prod/sa/api;DNS=client.example.com",
            cert.fingerprint_hex()
        )
    );
}

#[test]
fn xfcc_quotes_values_with_separators() {
    let ca = ca();
    let ee = leaf(
        &ca,
        vec![(DnType::CommonName, utf8("say \"hi\""))],
        vec![
            uri("https://example.org/a?b=c;d"),
            uri("spiffe://example.org/\"q\""),
            uri(SPIFFE),
            dns("a.example.com"),
            dns("B.example.com"),
        ],
    );
    let cert = ClientCert::from_chain(&[ee]).unwrap();
    assert_eq!(cert.subject, r#"CN=say \"hi\""#);
    assert_eq!(
        xfcc(&cert),
        format!(
            r#"Hash={};Subject="CN=say \\\"hi\\\"";URI="https://example.org/a?b=c;d";URI="spiffe://example.org/\"q\"";URI={};DNS=a.example.com;DNS=b.example.com"#,
            cert.fingerprint_hex(),
            SPIFFE
        )
    );
}

#[test]
fn fingerprint_hex_is_lowercase_in_byte_order() {
    let (_ca, chain) = alice();
    let mut cert = ClientCert::from_chain(&chain).unwrap();
    for (i, b) in cert.sha256.iter_mut().enumerate() {
        *b = (i as u8) * 8;
    }
    assert_eq!(
        cert.fingerprint_hex(),
        "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8"
    );
}

#[test]
fn empty_allowlist_permits_all() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    assert!(Allowlist::default().is_empty());
    assert!(Allowlist::default().permits(&cert));
}

#[test]
fn allowlist_by_common_name() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    let list = |cn: &str| Allowlist {
        subject_cn: vec!["bob".into(), cn.into()],
        ..Allowlist::default()
    };
    assert!(!list("alice").is_empty());
    assert!(list("alice").permits(&cert));
    assert!(!list("Alice").permits(&cert));
    assert!(!list("alice ").permits(&cert));
    // The organisation is not a CN.
    assert!(!list("Example, Inc.").permits(&cert));
}

#[test]
fn allowlist_by_dns_name() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    let list = |dns: &str| Allowlist {
        san_dns: vec![dns.into()],
        ..Allowlist::default()
    };
    assert!(list("client.example.com").permits(&cert));
    assert!(list("CLIENT.example.COM").permits(&cert));
    assert!(list("*.example.com").permits(&cert));
    assert!(list("*.EXAMPLE.com").permits(&cert));
    assert!(!list("*.client.example.com").permits(&cert));
    assert!(!list("*.com").permits(&cert));
    assert!(!list("example.com").permits(&cert));
    assert!(!list("other.example.com").permits(&cert));

    assert!(dns_matches("*.example.com", "a.example.com"));
    assert!(!dns_matches("*.example.com", "example.com"));
    assert!(!dns_matches("*.example.com", ".example.com"));
    assert!(!dns_matches("*.example.com", "a.b.example.com"));
    assert!(!dns_matches("*.example.com", "aexample.com"));
    // A wildcard in the certificate is not a wildcard for exact entries.
    assert!(!dns_matches("a.example.com", "*.example.com"));
}

#[test]
fn allowlist_by_uri() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    let list = |uri: &str| Allowlist {
        san_uri: vec![uri.into()],
        ..Allowlist::default()
    };
    assert!(list(SPIFFE).permits(&cert));
    assert!(list("spiffe://example.org/ns/prod/*").permits(&cert));
    assert!(list("spiffe://example.org/*").permits(&cert));
    assert!(!list("spiffe://example.org/ns/prod/sa/api/*").permits(&cert));
    assert!(!list("spiffe://example.org/ns/pro*").permits(&cert));
    assert!(!list("spiffe://example.org/ns/staging/*").permits(&cert));
    assert!(!list("SPIFFE://example.org/ns/prod/sa/api").permits(&cert));
    assert!(!list("spiffe://example.org/ns/prod/sa/ap").permits(&cert));

    assert!(!uri_matches(
        "spiffe://example.org/ns/prod/*",
        "spiffe://example.org/ns/prod"
    ));
    assert!(!uri_matches(
        "spiffe://example.org/ns/prod/*",
        "spiffe://example.org/ns/production/x"
    ));
}

#[test]
fn allowlist_by_fingerprint() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    let mut other = cert.sha256;
    other[31] ^= 1;
    let list = |fp: [u8; 32]| Allowlist {
        sha256: vec![fp],
        ..Allowlist::default()
    };
    assert!(list(cert.sha256).permits(&cert));
    assert!(!list(other).permits(&cert));
}

#[test]
fn allowlist_lists_are_alternatives() {
    let (_ca, chain) = alice();
    let cert = ClientCert::from_chain(&chain).unwrap();
    let miss_all = Allowlist {
        subject_cn: vec!["bob".into()],
        san_dns: vec!["bob.example.com".into()],
        san_uri: vec!["spiffe://example.org/ns/dev/*".into()],
        sha256: vec![[0; 32]],
    };
    assert!(!miss_all.permits(&cert));
    for hit in [
        Allowlist {
            subject_cn: vec!["alice".into()],
            ..miss_all.clone()
        },
        Allowlist {
            san_dns: vec!["*.example.com".into()],
            ..miss_all.clone()
        },
        Allowlist {
            san_uri: vec![SPIFFE.into()],
            ..miss_all.clone()
        },
        Allowlist {
            sha256: vec![[0; 32], cert.sha256],
            ..miss_all.clone()
        },
    ] {
        assert!(hit.permits(&cert), "{hit:?}");
    }
}

#[test]
fn parse_fingerprint_forms() {
    let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8) * 8 + 7);
    let bare = "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff";
    assert_eq!(parse_fingerprint(bare).unwrap(), bytes);
    assert_eq!(parse_fingerprint(&bare.to_uppercase()).unwrap(), bytes);

    let colons = "07:0F:17:1F:27:2F:37:3F:47:4F:57:5F:67:6F:77:7F:\
                  87:8F:97:9F:A7:AF:B7:BF:C7:CF:D7:DF:E7:EF:F7:FF";
    assert_eq!(parse_fingerprint(colons).unwrap(), bytes);
    assert_eq!(
        parse_fingerprint(&format!(" sha256:{colons}\n")).unwrap(),
        bytes
    );
    assert_eq!(parse_fingerprint(&format!("SHA256:{bare}")).unwrap(), bytes);
}

#[test]
fn parse_fingerprint_errors() {
    let bare = "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff";
    assert_eq!(
        parse_fingerprint(&bare[..62]).unwrap_err(),
        "a SHA-256 fingerprint has 64 hex digits, this one has 62"
    );
    assert_eq!(
        parse_fingerprint(&format!("{bare}00")).unwrap_err(),
        "a SHA-256 fingerprint has 64 hex digits, this one has 66"
    );
    assert_eq!(
        parse_fingerprint("").unwrap_err(),
        "a SHA-256 fingerprint has 64 hex digits, this one has 0"
    );
    assert_eq!(
        parse_fingerprint(&format!("{}g", &bare[..63])).unwrap_err(),
        "'g' in the fingerprint is not a hex digit"
    );
    assert_eq!(
        parse_fingerprint(&format!("{}é", &bare[..63])).unwrap_err(),
        "'é' in the fingerprint is not a hex digit"
    );
    assert_eq!(
        parse_fingerprint("07:0F:171F").unwrap_err(),
        "a fingerprint with colons needs exactly two hex digits between them (AB:CD:...)"
    );
    assert_eq!(
        parse_fingerprint(&format!("{bare}:")).unwrap_err(),
        "a fingerprint with colons needs exactly two hex digits between them (AB:CD:...)"
    );
    // sha1 is not sha256, whatever the prefix says.
    assert!(parse_fingerprint("sha1:0102").is_err());
}
