//! The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4
//! balancer writes before the client's first byte, naming the client's
//! address. This file is the pure parser; `reader` is the thin I/O shell that
//! feeds it from an accepted socket before the TLS handshake.
//!
//! The parser is told how many bytes it has and answers either with the
//! header (and its exact length) or with how many bytes it needs *at least*
//! before it can say more. The reader never reads past that, so the first
//! TLS record stays in the kernel, intact, for the record-exact handshake.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

mod reader;
#[cfg(test)]
mod tests;

pub use reader::{read_header, Refused};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header occupies on the wire (the connection's own bytes start after).
    pub len: usize,
    pub version: u8,
    /// The client address; None when the header says to keep the socket's
    /// (v1 `UNKNOWN`, v2 `LOCAL`, v2 unspecified or AF_UNIX addresses).
    pub source: Option<SocketAddr>,
}

/// Parse progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete(Header),
    /// Call again once the buffer holds at least this many bytes in total.
    NeedAtLeast(usize),
}

/// Why a header was refused; the text goes into the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Bytes to read before the first call: every header is at least this long
/// (v1's shortest, `PROXY UNKNOWN\r\n`, is 15; v2's fixed part is 16), so
/// reading this much can never take a byte of what follows the header.
pub const FIRST_READ: usize = 15;

/// v1: the longest line the spec allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// v2: the address block and TLVs we accept after the 16-byte fixed part.
/// The spec allows 65535; real balancers send the addresses plus a few
/// short TLVs (AWS's VPC endpoint ID, Azure's link ID, HAProxy's SSL facts).
/// A cap keeps a hostile peer from parking 64 KiB per pending connection.
pub const V2_MAX_PAYLOAD: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
const V2_FIXED: usize = 16;

/// Parses the start of `buf`. Never looks past the header: whatever follows
/// it in `buf` belongs to the connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, Invalid> {
    if buf.first() == Some(&V2_SIGNATURE[0]) {
        parse_v2(buf)
    } else {
        parse_v1(buf)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Invalid> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(Invalid("not a PROXY protocol header"));
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(Invalid("PROXY v1 line longer than 107 bytes"))
        } else {
            Ok(Parsed::NeedAtLeast(buf.len().max(FIRST_READ - 1) + 1))
        };
    };
    if window[cr] != b'\r' {
        return Err(Invalid("PROXY v1 line ends with a bare LF"));
    }
    match window.get(cr + 1) {
        None if cr + 1 >= V1_MAX_LEN => return Err(Invalid("PROXY v1 line longer than 107 bytes")),
        None => return Ok(Parsed::NeedAtLeast(cr + 2)),
        Some(b'\n') => {}
        Some(_) => return Err(Invalid("PROXY v1 line has a bare CR")),
    }
    let len = cr + 2;
    let line = &window[V1_PREFIX.len()..cr];
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or(b"");
    if proto == b"UNKNOWN" {
        // The spec: ignore whatever follows UNKNOWN up to the CRLF.
        return Ok(Parsed::Complete(Header {
            len,
            version: 1,
            source: None,
        }));
    }
    let v6 = match proto {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(Invalid("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Invalid(
            "PROXY v1 line does not have exactly four address fields",
        ));
    };
    let src = v1_address(src, v6).ok_or(Invalid("PROXY v1 source address is invalid"))?;
    v1_address(dst, v6).ok_or(Invalid("PROXY v1 destination address is invalid"))?;
    let sport = v1_port(sport).ok_or(Invalid("PROXY v1 source port is invalid"))?;
    v1_port(dport).ok_or(Invalid("PROXY v1 destination port is invalid"))?;
    Ok(Parsed::Complete(Header {
        len,
        version: 1,
        source: Some(SocketAddr::new(src, sport)),
    }))
}

fn v1_address(field: &[u8], v6: bool) -> Option<IpAddr> {
    let s = std::str::from_utf8(field).ok()?;
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        // std refuses leading zeros ("010.1.1.1"), which some parsers read as octal.
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// 0..=65535 in decimal, 1 to 5 digits, no sign and no leading zero.
fn v1_port(field: &[u8]) -> Option<u16> {
    let ok = !field.is_empty()
        && field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && (field == b"0" || field[0] != b'0');
    if !ok {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Invalid> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(Invalid("not a PROXY protocol header"));
    }
    if buf.len() < V2_FIXED {
        // The signature and version/family bytes can be judged early, but the
        // first read always brings 15 bytes, so one more read settles it.
        return Ok(Parsed::NeedAtLeast(V2_FIXED));
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("PROXY v2 header has an unknown version"));
    }
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => return Err(Invalid("PROXY v2 header has an unknown command")),
    };
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0F;
    if family > 3 || transport > 2 {
        return Err(Invalid("PROXY v2 header has an unknown address family"));
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(Invalid("PROXY v2 header is longer than 4096 bytes"));
    }
    let len = V2_FIXED + payload;
    if buf.len() < len {
        return Ok(Parsed::NeedAtLeast(len));
    }
    let body = &buf[V2_FIXED..len];
    // Address block sizes by family: INET 4+4+2+2, INET6 16+16+2+2, UNIX 108+108.
    let addr_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < addr_len {
        return Err(Invalid(
            "PROXY v2 address block is shorter than its family needs",
        ));
    }
    check_tlvs(&body[addr_len..])?;
    // LOCAL: the balancer's own connection (health checks); the spec says to
    // use the real endpoints. UNSPEC and AF_UNIX carry no IP address.
    let source = match (local, family) {
        (true, _) | (false, 0 | 3) => None,
        (false, _) if transport != 1 => {
            return Err(Invalid("PROXY v2 header describes a non-TCP connection"))
        }
        (false, 1) => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (false, _) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
    };
    Ok(Parsed::Complete(Header {
        len,
        version: 2,
        source,
    }))
}

/// TLVs are skipped, but they must tile the rest of the header exactly: a
/// length that overruns it means the sender and we disagree on the framing.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), Invalid> {
    while !tlvs.is_empty() {
        let [_kind, hi, lo, rest @ ..] = tlvs else {
            return Err(Invalid("PROXY v2 TLV is truncated"));
        };
        let value_len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if value_len > rest.len() {
            return Err(Invalid("PROXY v2 TLV is longer than the header"));
        }
        tlvs = &rest[value_len..];
    }
    Ok(())
}
