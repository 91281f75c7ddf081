//! XFCC values read back with Envoy's grammar: a certificate whose subject
//! or SANs carry quotes, backslashes and separators must still give exactly
//! one element with exactly its own keys.

use super::{ca, leaf, uri, utf8, SPIFFE};
use crate::identity::{xfcc, ClientCert};
use rcgen::DnType;

/// Reads an XFCC header the way Envoy's grammar says (elements split on ','
/// and pairs on ';' outside quotes, `\x` inside quotes is `x`): the list of
/// elements, each a list of (key, value).
fn parse_xfcc(header: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![Vec::new()];
    let (mut key, mut value) = (String::new(), String::new());
    let (mut in_value, mut quoted, mut escaped) = (false, false, false);
    fn finish(elements: &mut [Vec<(String, String)>], k: &mut String, v: &mut String) {
        if let Some(last) = elements.last_mut() {
            last.push((std::mem::take(k), std::mem::take(v)));
        }
    }
    for c in header.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {
                    value.push(c);
                    escaped = false;
                }
            }
            continue;
        }
        match c {
            '"' if in_value && value.is_empty() => quoted = true,
            '=' if !in_value => in_value = true,
            ';' => {
                finish(&mut elements, &mut key, &mut value);
                in_value = false;
            }
            ',' => {
                finish(&mut elements, &mut key, &mut value);
                in_value = false;
                elements.push(Vec::new());
            }
            c if in_value => value.push(c),
            c => key.push(c),
        }
    }
    finish(&mut elements, &mut key, &mut value);
    elements
}

#[test]
fn xfcc_subject_cannot_break_out_of_its_quotes() {
    let ca = ca();
    // RFC 4514 escapes '\\', '"', ',' and ';' with a backslash; quoting that
    // with only '"' escaped would let `\\"` close the string.
    let hostile = r#"x\",URI=spiffe://evil;By=spiffe://admin"#;
    let ee = leaf(
        &ca,
        vec![(DnType::CommonName, utf8(hostile))],
        vec![uri(r"spiffe://a\b"), uri(SPIFFE)],
    );
    let cert = ClientCert::from_chain(&[ee]).unwrap();
    assert_eq!(
        cert.subject,
        r#"CN=x\\\"\,URI=spiffe://evil\;By=spiffe://admin"#
    );
    let header = xfcc(&cert);
    let elements = parse_xfcc(&header);
    assert_eq!(elements.len(), 1, "{header}");
    let keys: Vec<&str> = elements[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Hash", "Subject", "URI", "URI"], "{header}");
    assert_eq!(elements[0][1].1, cert.subject, "{header}");
    assert_eq!(elements[0][2].1, r"spiffe://a\b", "{header}");
    assert_eq!(elements[0][3].1, SPIFFE, "{header}");
    // A backslash alone is enough to quote a URI.
    assert!(header.contains(r#";URI="spiffe://a\\b";"#), "{header}");
}
