//! Reads the server name (SNI) out of a ClientHello record.
//!
//! rustls's unbuffered server connection does not expose the SNI, and the
//! kernel-TLS handover needs it captured before rustls is gone; the first
//! record is in our hands anyway (we read the handshake one record at a time),
//! so we parse it ourselves. Pure: bytes in, name out, no I/O.

/// TLS record header length: type(1) version(2) length(2).
pub const RECORD_HEADER_LEN: usize = 5;
/// Largest record body a peer may send (2^14 plaintext plus expansion allowance).
pub const MAX_RECORD_BODY: usize = 16384 + 2048;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// Why a first record could not be read as a ClientHello.
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq)]
pub enum HelloError {
    NotHandshake,
    NotClientHello,
    /// The ClientHello continues in a later record; the name cannot be read from this one.
    Fragmented,
    Truncated,
    BadServerName,
}

/// Length of the record body announced by a 5-byte record header.
pub fn record_body_len(header: &[u8; RECORD_HEADER_LEN]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// Returns the host name a client asked for, or None when it sent no SNI.
/// `record` is one whole TLS record (header and body).
pub fn server_name(record: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(record);
    if r.u8()? != CONTENT_HANDSHAKE {
        return Err(HelloError::NotHandshake);
    }
    r.take(2)?; // legacy record version
    let body_len = usize::from(r.u16()?);
    let mut body = Reader(r.take(body_len)?);
    if body.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::NotClientHello);
    }
    let hello_len = body.u24()?;
    if hello_len > body.0.len() {
        return Err(HelloError::Fragmented);
    }
    let mut hello = Reader(body.take(hello_len)?);
    hello.take(2 + 32)?; // client_version, random
    let session_id_len = usize::from(hello.u8()?);
    hello.take(session_id_len)?;
    let suites_len = usize::from(hello.u16()?);
    hello.take(suites_len)?;
    let compression_len = usize::from(hello.u8()?);
    hello.take(compression_len)?;
    if hello.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let ext_len = usize::from(hello.u16()?);
    let mut exts = Reader(hello.take(ext_len)?);
    while !exts.0.is_empty() {
        let ext_type = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if ext_type == EXT_SERVER_NAME {
            return parse_server_name_list(data).map(Some);
        }
    }
    Ok(None)
}

fn parse_server_name_list(data: &[u8]) -> Result<String, HelloError> {
    let mut r = Reader(data);
    let list_len = usize::from(r.u16()?);
    let mut list = Reader(r.take(list_len)?);
    while !list.0.is_empty() {
        let name_type = list.u8()?;
        let len = usize::from(list.u16()?);
        let name = list.take(len)?;
        if name_type == NAME_TYPE_HOST {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(HelloError::BadServerName);
            }
            // ASCII checked above, so this cannot fail; map anyway rather than unwrap.
            return std::str::from_utf8(name)
                .map(str::to_ascii_lowercase)
                .map_err(|_| HelloError::BadServerName);
        }
    }
    Err(HelloError::BadServerName)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<usize, HelloError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ClientHello record with the given extensions block.
    fn hello(extensions: Option<Vec<u8>>) -> Vec<u8> {
        let mut h = vec![3, 3];
        h.extend([7u8; 32]);
        h.push(0); // session id
        h.extend([0, 2, 0x13, 0x01]); // one suite
        h.extend([1, 0]); // null compression
        if let Some(ext) = extensions {
            h.extend((ext.len() as u16).to_be_bytes());
            h.extend(ext);
        }
        let mut body = vec![
            HANDSHAKE_CLIENT_HELLO,
            0,
            (h.len() >> 8) as u8,
            h.len() as u8,
        ];
        body.extend(h);
        let mut rec = vec![CONTENT_HANDSHAKE, 3, 1];
        rec.extend((body.len() as u16).to_be_bytes());
        rec.extend(body);
        rec
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend(entry);
        let mut ext = vec![0, 0];
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend(data);
        ext
    }

    #[test]
    fn finds_the_name_after_other_extensions() {
        let mut exts = vec![0, 10, 0, 2, 0, 0x1d]; // supported_groups-ish
        exts.extend(sni_ext(b"API.Example.com"));
        assert_eq!(
            server_name(&hello(Some(exts))),
            Ok(Some("api.example.com".into()))
        );
    }

    #[test]
    fn no_sni_and_no_extensions_are_none() {
        assert_eq!(server_name(&hello(None)), Ok(None));
        assert_eq!(server_name(&hello(Some(vec![0, 10, 0, 0]))), Ok(None));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let rec = hello(Some(sni_ext(b"localhost")));
        for cut in 0..rec.len() {
            assert!(server_name(&rec[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_hostile_names_and_wrong_records() {
        assert_eq!(
            server_name(&hello(Some(sni_ext(b"a\0b")))),
            Err(HelloError::BadServerName)
        );
        assert_eq!(
            server_name(&hello(Some(sni_ext(b"")))),
            Err(HelloError::BadServerName)
        );
        let mut rec = hello(None);
        rec[0] = 23;
        assert_eq!(server_name(&rec), Err(HelloError::NotHandshake));
        let mut rec = hello(None);
        rec[5] = 2;
        assert_eq!(server_name(&rec), Err(HelloError::NotClientHello));
    }

    #[test]
    fn a_hello_longer_than_its_record_is_fragmented() {
        let mut rec = hello(Some(sni_ext(b"localhost")));
        rec[7] = 0xff; // claim a longer ClientHello than the record holds
        assert_eq!(server_name(&rec), Err(HelloError::Fragmented));
    }
}
