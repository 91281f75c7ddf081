//! Client identity: what a route may check about, and tell a backend about,
//! the certificate a client authenticated with.
//!
//! The handshake has already verified the chain; this module only reads
//! names out of the end-entity certificate (once per connection) and renders
//! them as allowlist inputs and as header values. Anything that could not be
//! sent safely in a header value is escaped or dropped at parse time, so the
//! renderers can trust what they are given. No I/O: tested byte by byte.

use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rustls::pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// What the gateway knows about a verified client certificate, parsed once per connection.
///
/// No copy of the certificates themselves: the connection's transport keeps
/// the chain (one copy per connection), and the headers that carry DER
/// (`escaped_pem`, RFC 9440) are written from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// RFC 4514 string: RDNs last-to-first, joined by ",". Escaped so that it
    /// is printable ASCII (see `push_escaped`), hence usable in a header.
    pub subject: String,
    /// Subject CN values that have a string type.
    pub common_names: Vec<String>,
    /// SAN dNSName entries, lowercased.
    pub dns_names: Vec<String>,
    /// SAN URI entries (e.g. SPIFFE IDs), as written.
    pub uris: Vec<String>,
    /// SHA-256 over the end-entity DER.
    pub sha256: [u8; 32],
}

impl ClientCert {
    /// None if the chain is empty or the end-entity certificate does not parse.
    ///
    /// SAN dNSName and URI entries with bytes outside printable ASCII (control
    /// characters, spaces, raw UTF-8) are ignored: no valid host name or URI
    /// has them, and forwarding them in a header could split the header.
    pub fn from_chain(chain: &[CertificateDer<'static>]) -> Option<ClientCert> {
        let ee = chain.first()?;
        let (rest, cert) = X509Certificate::from_der(ee).ok()?;
        if !rest.is_empty() {
            return None;
        }

        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| decode_string(cn.attr_value()))
            .collect();

        // An error here is a SAN extension that is malformed or present twice:
        // a certificate we would rather not draw names from.
        let san = cert.subject_alternative_name().ok()?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) if is_printable_token(dns) => {
                    dns_names.push(dns.to_ascii_lowercase())
                }
                GeneralName::URI(uri) if is_printable_token(uri) => uris.push(uri.to_string()),
                _ => {}
            }
        }

        Some(ClientCert {
            subject: rfc4514(cert.subject())?,
            common_names,
            dns_names,
            uris,
            sha256: sha256(ee),
        })
    }

    /// Lowercase hex, no separators (64 characters).
    pub fn fingerprint_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.sha256 {
            out.push(HEX_LOWER[usize::from(b >> 4)] as char);
            out.push(HEX_LOWER[usize::from(b & 0xf)] as char);
        }
        out
    }
}

/// The RFC 4514 subject of any certificate (an intermediate a handshake
/// refused, say), escaped to printable ASCII like [`ClientCert::subject`] so
/// that it is safe in a log line. None if the certificate does not parse.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    rfc4514(cert.subject())
}

/// nginx's `$ssl_client_escaped_cert`: the certificate as PEM, percent-encoded
/// so it fits in one header value. Every byte except ALPHA / DIGIT / "-" /
/// "." / "_" / "~" becomes %XX (uppercase).
pub fn escaped_pem(der: &[u8]) -> String {
    let pem = pem(der);
    let mut out = String::with_capacity(pem.len() + pem.len() / 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[usize::from(b >> 4)] as char);
            out.push(HEX_UPPER[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// RFC 9440 `Client-Cert` value: a Structured Field byte sequence,
/// ":" + standard base64 with padding + ":".
pub fn rfc9440_client_cert(der: &[u8]) -> String {
    format!(":{}:", BASE64.encode(der))
}

/// RFC 9440 `Client-Cert-Chain` value: an sf-list of byte sequences, one per
/// intermediate in the order the client sent them. None when there are none,
/// because RFC 9440 has the header absent rather than empty.
pub fn rfc9440_client_cert_chain(intermediates: &[CertificateDer<'_>]) -> Option<String> {
    if intermediates.is_empty() {
        return None;
    }
    let items: Vec<String> = intermediates
        .iter()
        .map(|der| rfc9440_client_cert(der))
        .collect();
    Some(items.join(", "))
}

/// Envoy's `X-Forwarded-Client-Cert` element for this client:
/// `Hash=<hex>;Subject="<subject>"` then one `URI=` per SAN URI and one
/// `DNS=` per SAN dNSName.
///
/// Quoting follows Envoy's documented rules: a value containing ',', ';',
/// '=' or '"' is double-quoted; Subject is always quoted. Inside quotes '"'
/// and '\' are written as `\"` and `\\` (RFC 9110 quoted-pair): the subject
/// is RFC 4514 text, full of backslashes, and an unescaped `\` before an
/// escaped quote would end the string early and let a certificate's subject
/// write its own `;URI=` or `,Hash=` after it. A value holding a backslash
/// is quoted for the same reason. (Envoy itself writes URI and DNS values
/// unquoted whatever they hold, and emits an empty `URI=` when there is none;
/// we quote where the documentation says to, and leave out keys with no value.)
pub fn xfcc(cert: &ClientCert) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("Hash=");
    out.push_str(&cert.fingerprint_hex());
    out.push_str(";Subject=");
    push_quoted(&mut out, &cert.subject);
    for uri in &cert.uris {
        out.push_str(";URI=");
        push_xfcc_value(&mut out, uri);
    }
    for dns in &cert.dns_names {
        out.push_str(";DNS=");
        push_xfcc_value(&mut out, dns);
    }
    out
}

/// Allowlists on the verified client certificate. A certificate is permitted
/// when it matches at least one entry of any list (the lists are
/// alternatives). An empty allowlist permits every verified certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Subject CN, exact and case-sensitive.
    pub subject_cn: Vec<String>,
    /// SAN dNSName, case-insensitive; "*.example.com" matches exactly one
    /// extra label ("a.example.com", not "example.com" nor "a.b.example.com").
    pub san_dns: Vec<String>,
    /// SAN URI, exact; an entry ending in "/*" matches every URI that starts
    /// with the entry minus the "*" (e.g. "spiffe://example.org/ns/prod/*").
    pub san_uri: Vec<String>,
    /// SHA-256 of the end-entity certificate.
    pub sha256: Vec<[u8; 32]>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.subject_cn.is_empty()
            && self.san_dns.is_empty()
            && self.san_uri.is_empty()
            && self.sha256.is_empty()
    }

    pub fn permits(&self, cert: &ClientCert) -> bool {
        self.is_empty()
            || self
                .subject_cn
                .iter()
                .any(|entry| cert.common_names.iter().any(|cn| cn == entry))
            || self
                .san_dns
                .iter()
                .any(|entry| cert.dns_names.iter().any(|dns| dns_matches(entry, dns)))
            || self
                .san_uri
                .iter()
                .any(|entry| cert.uris.iter().any(|uri| uri_matches(entry, uri)))
            || self.sha256.contains(&cert.sha256)
    }
}

/// Parses a SHA-256 fingerprint as operators paste it: 64 hex digits in any
/// case, either bare or as 32 colon-separated pairs (what
/// `openssl x509 -fingerprint -sha256` prints), with an optional "sha256:"
/// prefix.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    let hex = match (s.get(..7), s.get(7..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("sha256:") => rest,
        _ => s,
    };
    // Colons must separate pairs, as openssl prints them: "ABC:D..." is more
    // likely a bad paste than a fingerprint.
    if hex.contains(':') && hex.split(':').any(|pair| pair.len() != 2) {
        return Err(
            "a fingerprint with colons needs exactly two hex digits between them (AB:CD:...)"
                .to_string(),
        );
    }

    let mut nibbles = Vec::with_capacity(64);
    for c in hex.chars().filter(|&c| c != ':') {
        match c.to_digit(16) {
            Some(n) => nibbles.push(n as u8),
            None => return Err(format!("{c:?} in the fingerprint is not a hex digit")),
        }
    }
    if nibbles.len() != 64 {
        return Err(format!(
            "a SHA-256 fingerprint has 64 hex digits, this one has {}",
            nibbles.len()
        ));
    }

    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(nibbles.chunks_exact(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Ok(out)
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    out
}

/// "-----BEGIN CERTIFICATE-----\n", base64 in 64-character lines,
/// "\n-----END CERTIFICATE-----\n": what OpenSSL writes, so what nginx escapes.
fn pem(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 56);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for (i, c) in b64.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push_str("\n-----END CERTIFICATE-----\n");
    out
}

/// Host names and URIs contain neither spaces, controls nor raw non-ASCII.
fn is_printable_token(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

fn push_xfcc_value(out: &mut String, value: &str) {
    if value.contains([',', ';', '=', '"', '\\']) {
        push_quoted(out, value);
    } else {
        out.push_str(value);
    }
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn dns_matches(entry: &str, name: &str) -> bool {
    match entry.strip_prefix("*.") {
        Some(parent) => match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(parent),
            None => false,
        },
        None => entry.eq_ignore_ascii_case(name),
    }
}

fn uri_matches(entry: &str, uri: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => uri.starts_with(prefix),
        _ => entry == uri,
    }
}

/// The RFC 4514 string of a Name: RDNs in reverse order joined by ",", the
/// values of a multi-valued RDN joined by "+". Types without an RFC 4514
/// short name, and values without a string type, are written as
/// `<dotted OID or short name>=#<hex of the DER value>` (RFC 4514 §2.4).
/// None only if a value cannot be re-encoded, which a parsed one can.
fn rfc4514(name: &X509Name<'_>) -> Option<String> {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            let short = short_name(&oid);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match (short, decode_string(attr.attr_value())) {
                (Some(_), Some(value)) => push_escaped(&mut out, &value),
                _ => {
                    out.push('#');
                    for b in attr.attr_value().to_der_vec().ok()? {
                        out.push(HEX_UPPER[usize::from(b >> 4)] as char);
                        out.push(HEX_UPPER[usize::from(b & 0xf)] as char);
                    }
                }
            }
        }
    }
    Some(out)
}

/// The attribute types RFC 4514 §3 names; every other type is written as
/// its dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// A DirectoryString-like value as text; None for non-string types.
/// TeletexString is read as Latin-1, as OpenSSL reads it.
fn decode_string(value: &Any<'_>) -> Option<String> {
    let data = value.as_bytes();
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString if data.len() % 2 == 0 => {
            let units = data
                .chunks_exact(2)
                .map(|u| u16::from_be_bytes([u[0], u[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|u| char::from_u32(u32::from_be_bytes([u[0], u[1], u[2], u[3]])))
            .collect(),
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping, plus: every byte of a control or non-ASCII
/// character becomes \XX. RFC 4514 allows escaping any character that way;
/// doing it keeps the subject printable ASCII (safe in a header) and equal to
/// what OpenSSL's RFC 2253 printing gives, which is what nginx's
/// `$ssl_client_s_dn` and Envoy's XFCC Subject carry.
fn push_escaped(out: &mut String, value: &str) {
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ' ' => out.push(' '),
            c if c.is_ascii_graphic() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push('\\');
                    out.push(HEX_UPPER[usize::from(b >> 4)] as char);
                    out.push(HEX_UPPER[usize::from(b & 0xf)] as char);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
