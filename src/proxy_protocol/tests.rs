//! The PROXY parser byte by byte: every prefix of a valid header asks for
//! more (never more than the header holds), every hostile length is refused,
//! and nothing after the header is ever looked at.

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feeds `header` the way the reader does (FIRST_READ, then exactly what is
/// asked for) and checks the reader would never ask for a byte past it.
fn drive(header: &[u8]) -> Result<Header, Invalid> {
    let mut have = FIRST_READ.min(header.len());
    loop {
        match parse(&header[..have])? {
            Parsed::Complete(h) => {
                assert_eq!(h.len, have, "complete exactly at the bytes read");
                return Ok(h);
            }
            Parsed::NeedAtLeast(n) => {
                assert!(n > have, "progress: asked {n} with {have}");
                assert!(
                    n <= header.len().max(have + 1),
                    "over-read: asked {n} of {}",
                    header.len()
                );
                if n > header.len() {
                    return Err(Invalid("test: truncated"));
                }
                have = n;
            }
        }
    }
}

fn v2(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(fam);
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn inet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = src.to_vec();
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let h = drive(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n").unwrap();
    assert_eq!(
        h,
        Header {
            len: 45,
            version: 1,
            source: Some(sa("192.0.2.1:56324"))
        }
    );
    let h = drive(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n").unwrap();
    assert_eq!(h.source, Some(sa("[2001:db8::1]:1")));
    let h = drive(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!((h.len, h.source), (15, None));
    // Anything after UNKNOWN up to the CRLF is ignored, as the spec says.
    let h = drive(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n").unwrap();
    assert_eq!(h.source, None);
    // The longest legal line: 107 bytes with the CRLF.
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), V1_MAX_LEN);
    assert!(drive(longest).is_ok());
    let h = drive(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n").unwrap();
    assert_eq!(h.source, Some(sa("0.0.0.0:0")));
}

#[test]
fn v1_never_reads_past_the_crlf() {
    let header = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    let mut buf = header.to_vec();
    buf.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    let Ok(Parsed::Complete(h)) = parse(&buf) else {
        panic!("complete")
    };
    assert_eq!(h.len, header.len());
    // Every prefix asks for exactly one more byte once the first read is in.
    for cut in FIRST_READ..header.len() {
        assert_eq!(
            parse(&header[..cut]),
            Ok(Parsed::NeedAtLeast(cut + 1)),
            "{cut}"
        );
    }
    for cut in 0..FIRST_READ {
        assert_eq!(
            parse(&header[..cut]),
            Ok(Parsed::NeedAtLeast(FIRST_READ)),
            "{cut}"
        );
    }
}

#[test]
fn v1_refusals() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 extra\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 010.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 \r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY \r\n\r\n\r\n\r\n\r\n",
        b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY\tTCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\0\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh",
        b"PROXY TCP4 \xff.0.2.1 198.51.100.2 1 2\r\n",
    ];
    for b in bad {
        assert!(drive(b).is_err(), "{:?}", String::from_utf8_lossy(b));
    }
    // The first bytes settle a non-PROXY stream at once.
    assert_eq!(parse(b"\x16"), Err(Invalid("not a PROXY protocol header")));
    assert_eq!(parse(b"PROXX"), Err(Invalid("not a PROXY protocol header")));
    assert_eq!(parse(b""), Ok(Parsed::NeedAtLeast(FIRST_READ)));
}

#[test]
fn v1_length_limit() {
    // No CRLF within 107 bytes: refused without reading a 108th.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN, b'a');
    assert_eq!(
        parse(&long),
        Err(Invalid("PROXY v1 line longer than 107 bytes"))
    );
    assert_eq!(
        parse(&long[..V1_MAX_LEN - 1]),
        Ok(Parsed::NeedAtLeast(V1_MAX_LEN))
    );
    // CR as the 107th byte: the LF would be the 108th.
    let mut cr_last = long.clone();
    cr_last[V1_MAX_LEN - 1] = b'\r';
    assert_eq!(
        parse(&cr_last),
        Err(Invalid("PROXY v1 line longer than 107 bytes"))
    );
    // CRLF as bytes 106 and 107: the longest legal line.
    let mut fits = long;
    fits[V1_MAX_LEN - 2] = b'\r';
    fits[V1_MAX_LEN - 1] = b'\n';
    assert!(matches!(parse(&fits), Ok(Parsed::Complete(h)) if h.len == V1_MAX_LEN));
}

#[test]
fn v2_inet_inet6_with_tlvs() {
    let h = drive(&v2(
        0x21,
        0x11,
        &inet([203, 0, 113, 9], [127, 0, 0, 1], 51000, 8443),
    ))
    .unwrap();
    assert_eq!(
        h,
        Header {
            len: 28,
            version: 2,
            source: Some(sa("203.0.113.9:51000"))
        }
    );
    let mut p6 = vec![0x20, 0x01, 0x0d, 0xb8];
    p6.extend_from_slice(&[0; 11]);
    p6.push(7);
    p6.extend_from_slice(&[0; 15]);
    p6.push(1);
    p6.extend_from_slice(&4444u16.to_be_bytes());
    p6.extend_from_slice(&443u16.to_be_bytes());
    // TLVs: ALPN "h2", an AWS-style VPC endpoint ID, NOOP padding of length 0.
    p6.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    p6.extend_from_slice(&[0xEA, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
    p6.extend_from_slice(&[0x04, 0x00, 0x00]);
    let header = v2(0x21, 0x21, &p6);
    let h = drive(&header).unwrap();
    assert_eq!(h.source, Some(sa("[2001:db8::7]:4444")));
    assert_eq!(h.len, header.len());
}

#[test]
fn v2_keeps_the_socket_address_when_told_to() {
    // LOCAL (health checks), whatever the family says.
    let h = drive(&v2(0x20, 0x00, &[])).unwrap();
    assert_eq!((h.len, h.source), (16, None));
    let h = drive(&v2(0x20, 0x11, &inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2))).unwrap();
    assert_eq!(h.source, None);
    // PROXY with UNSPEC family, and AF_UNIX.
    assert_eq!(drive(&v2(0x21, 0x00, &[])).unwrap().source, None);
    assert_eq!(drive(&v2(0x21, 0x31, &[0u8; 216])).unwrap().source, None);
}

#[test]
fn v2_never_reads_past_its_length() {
    let header = v2(0x21, 0x11, &inet([203, 0, 113, 9], [127, 0, 0, 1], 1, 2));
    // (An empty buffer cannot tell v1 from v2 yet: it asks for FIRST_READ.)
    for cut in 1..V2_FIXED {
        assert_eq!(
            parse(&header[..cut]),
            Ok(Parsed::NeedAtLeast(V2_FIXED)),
            "{cut}"
        );
    }
    for cut in V2_FIXED..header.len() {
        assert_eq!(
            parse(&header[..cut]),
            Ok(Parsed::NeedAtLeast(header.len())),
            "{cut}"
        );
    }
    let mut with_tls = header.clone();
    with_tls.extend_from_slice(b"\x16\x03\x01\x00\x05hello");
    assert!(matches!(parse(&with_tls), Ok(Parsed::Complete(h)) if h.len == header.len()));
}

#[test]
fn v2_refusals() {
    let addr = inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (v2(0x11, 0x11, &addr), "unknown version"),
        (v2(0x31, 0x11, &addr), "unknown version"),
        (v2(0x22, 0x11, &addr), "unknown command"),
        (v2(0x2F, 0x11, &addr), "unknown command"),
        (v2(0x21, 0x41, &addr), "unknown address family"),
        (v2(0x21, 0x13, &addr), "unknown address family"),
        (v2(0x21, 0x12, &addr), "non-TCP"),
        (v2(0x21, 0x10, &addr), "non-TCP"),
        (v2(0x21, 0x11, &addr[..11]), "shorter than its family"),
        (v2(0x21, 0x21, &addr), "shorter than its family"),
        (v2(0x21, 0x31, &[0u8; 215]), "shorter than its family"),
        (
            v2(0x21, 0x11, &[&addr[..], &[0x01]].concat()),
            "TLV is truncated",
        ),
        (
            v2(0x21, 0x11, &[&addr[..], &[0x01, 0x00]].concat()),
            "TLV is truncated",
        ),
        (
            v2(
                0x21,
                0x11,
                &[&addr[..], &[0x01, 0x00, 0x03, b'a', b'b']].concat(),
            ),
            "TLV is longer",
        ),
        (
            v2(0x21, 0x11, &[&addr[..], &[0x01, 0xFF, 0xFF, b'a']].concat()),
            "TLV is longer",
        ),
    ];
    for (header, why) in cases {
        let err = drive(&header).expect_err(why);
        assert!(err.0.contains(why), "{why}: {err}");
    }
    // A corrupted signature byte, at every position.
    let good = v2(0x21, 0x11, &addr);
    for i in 1..V2_SIGNATURE.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        assert_eq!(
            parse(&bad),
            Err(Invalid("not a PROXY protocol header")),
            "byte {i}"
        );
    }
}

#[test]
fn v2_hostile_lengths() {
    // The length field is judged before any of the payload is read.
    let mut fixed = V2_SIGNATURE.to_vec();
    fixed.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
    assert_eq!(
        parse(&fixed),
        Err(Invalid("PROXY v2 header is longer than 4096 bytes"))
    );
    let mut at_cap = V2_SIGNATURE.to_vec();
    at_cap.extend_from_slice(&[0x21, 0x11]);
    at_cap.extend_from_slice(&u16::try_from(V2_MAX_PAYLOAD).unwrap().to_be_bytes());
    assert_eq!(
        parse(&at_cap),
        Ok(Parsed::NeedAtLeast(V2_FIXED + V2_MAX_PAYLOAD))
    );
    let mut over = V2_SIGNATURE.to_vec();
    over.extend_from_slice(&[0x21, 0x11]);
    over.extend_from_slice(&u16::try_from(V2_MAX_PAYLOAD + 1).unwrap().to_be_bytes());
    assert!(parse(&over).is_err());
    // A full-size header of padding TLVs is fine.
    let mut payload = inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let pad = V2_MAX_PAYLOAD - payload.len() - 3;
    payload.extend_from_slice(&[0x04]);
    payload.extend_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
    payload.resize(V2_MAX_PAYLOAD, 0);
    let h = drive(&v2(0x21, 0x11, &payload)).unwrap();
    assert_eq!(h.len, V2_FIXED + V2_MAX_PAYLOAD);
    // Zero length with an address family: too short for the addresses.
    assert!(drive(&v2(0x21, 0x11, &[])).is_err());
}
