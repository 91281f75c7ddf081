//! Reads the server name (SNI) out of a ClientHello, reassembled from as many
//! TLS records as the client split it over.
//!
//! The site (certificate, client CAs, mTLS mode) is chosen from this name
//! before rustls runs, so this parser must see the same hello rustls will.
//! rustls reassembles a hello fragmented over several records; an earlier
//! version of this file read only the first record, so a client could split
//! its hello, have the default site run the handshake, and leave rustls with
//! another site's name in the session ticket. Now the records are gathered
//! (bounded by [`MAX_HELLO_LEN`]) until the whole hello is in, and a hello
//! that cannot be parsed is refused rather than handed to a default site.
//! Pure: bytes in, name out, no I/O.

/// TLS record header length: type(1) version(2) length(2).
pub const RECORD_HEADER_LEN: usize = 5;
/// Largest record body a peer may send (2^14 plaintext plus expansion allowance).
pub const MAX_RECORD_BODY: usize = 16384 + 2048;
/// Largest plaintext record body (RFC 8446 5.1, RFC 5246 6.2.1): the
/// records of a ClientHello are plaintext, so none may be longer.
pub const MAX_PLAINTEXT_BODY: usize = 16384;
/// Largest ClientHello message we assemble. Real ones are a few KiB even with
/// post-quantum key shares; rustls itself gives up at 64 KiB.
pub const MAX_HELLO_LEN: usize = 32 * 1024;
/// Most records a ClientHello may be split over. Splitting is legal (and
/// tlsfuzzer sends one-byte fragments), but each record costs two reads.
pub const MAX_HELLO_RECORDS: usize = 4096;

pub const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER_LEN: usize = 4;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// How far the ClientHello has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// The records so far hold only part of the hello: read another record.
    Incomplete,
    /// The whole hello is in; the name the client asked for, lowercased and
    /// without a trailing dot, if any.
    Complete { server_name: Option<String> },
}

/// Why the first records could not be read as a ClientHello.
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq)]
pub enum HelloError {
    /// The first record is not a TLS handshake record (plain HTTP, a scanner).
    NotHandshake,
    /// A later record before the hello was complete is not a handshake record.
    UnexpectedRecord,
    /// A handshake record with no bytes in it (forbidden, and free to send forever).
    EmptyRecord,
    NotClientHello,
    /// The hello announces more than [`MAX_HELLO_LEN`] bytes.
    TooLarge,
    /// The hello is split over more than [`MAX_HELLO_RECORDS`] records.
    TooManyRecords,
    /// A length inside the hello runs past its end.
    Truncated,
    /// A record of the hello is longer than a plaintext record may be (2^14).
    RecordOverflow,
    BadServerName,
}

impl HelloError {
    /// The TLS alert description to refuse with (RFC 8446 section 6.2).
    pub fn alert(&self) -> u8 {
        const UNEXPECTED_MESSAGE: u8 = 10;
        const ILLEGAL_PARAMETER: u8 = 47;
        const DECODE_ERROR: u8 = 50;
        const RECORD_OVERFLOW: u8 = 22;
        match self {
            HelloError::NotHandshake
            | HelloError::UnexpectedRecord
            | HelloError::NotClientHello => UNEXPECTED_MESSAGE,
            HelloError::TooLarge | HelloError::TooManyRecords | HelloError::BadServerName => {
                ILLEGAL_PARAMETER
            }
            HelloError::EmptyRecord | HelloError::Truncated => DECODE_ERROR,
            HelloError::RecordOverflow => RECORD_OVERFLOW,
        }
    }
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HelloError::NotHandshake => "the first record is not a TLS handshake record",
            HelloError::UnexpectedRecord => "a non-handshake record arrived inside the ClientHello",
            HelloError::EmptyRecord => "an empty handshake record",
            HelloError::NotClientHello => "the first handshake message is not a ClientHello",
            HelloError::TooLarge => "the ClientHello is larger than 32 KiB",
            HelloError::TooManyRecords => "the ClientHello is split over more than 4096 records",
            HelloError::Truncated => "a length inside the ClientHello runs past its end",
            HelloError::RecordOverflow => "a ClientHello record is longer than 2^14 bytes",
            HelloError::BadServerName => "the server_name extension is malformed",
        })
    }
}

/// Length of the record body announced by a 5-byte record header.
pub fn record_body_len(header: &[u8; RECORD_HEADER_LEN]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// Gathers the ClientHello from the records that carry it, one record at a
/// time, and reads the server name once the hello is whole. Each byte is
/// copied at most once (and not at all when the hello fits one record).
#[derive(Default)]
pub struct HelloAssembler {
    /// Handshake bytes of the records pushed so far, when more than one was needed.
    joined: Vec<u8>,
    records: usize,
}

impl HelloAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next whole record (header and body) as read from the socket.
    pub fn push_record(&mut self, record: &[u8]) -> Result<Hello, HelloError> {
        let first = self.records == 0;
        self.records += 1;
        let mut r = Reader(record);
        let content_type = r.u8()?;
        r.take(2)?; // legacy record version
        let len = usize::from(r.u16()?);
        let body = r.take(len)?;
        if content_type != CONTENT_HANDSHAKE {
            return Err(if first {
                HelloError::NotHandshake
            } else {
                HelloError::UnexpectedRecord
            });
        }
        if body.is_empty() {
            return Err(HelloError::EmptyRecord);
        }
        if body.len() > MAX_PLAINTEXT_BODY {
            // rustls does not check this for plaintext records; the RFC
            // says record_overflow (tlsfuzzer's record-layer-fragmentation).
            return Err(HelloError::RecordOverflow);
        }
        if self.records > MAX_HELLO_RECORDS {
            return Err(HelloError::TooManyRecords);
        }
        if first {
            if let Some(done) = Self::try_complete(body)? {
                return Ok(done);
            }
        }
        self.joined.extend_from_slice(body);
        Ok(Self::try_complete(&self.joined)?.unwrap_or(Hello::Incomplete))
    }

    /// Some(Complete) when `message` holds the whole hello, None when it needs more.
    fn try_complete(message: &[u8]) -> Result<Option<Hello>, HelloError> {
        if message.len() < HANDSHAKE_HEADER_LEN {
            return Ok(None);
        }
        let mut r = Reader(message);
        if r.u8()? != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello);
        }
        let hello_len = r.u24()?;
        if hello_len > MAX_HELLO_LEN {
            return Err(HelloError::TooLarge);
        }
        if r.0.len() < hello_len {
            return Ok(None);
        }
        let server_name = server_name_in(r.take(hello_len)?)?;
        Ok(Some(Hello::Complete { server_name }))
    }
}

/// The host name in a ClientHello body (after its 4-byte handshake header).
fn server_name_in(hello_body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut hello = Reader(hello_body);
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
            // RFC 6066 forbids a trailing dot, clients send one anyway, and
            // rustls drops it: this parser must report the name rustls sees,
            // so drop it here too (one, as rustls does).
            let name = name.strip_suffix(b".").unwrap_or(name);
            if !valid || name.is_empty() {
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

    /// The handshake bytes of a record built by `hello`, re-split into
    /// records of `sizes` bytes (the last takes the rest).
    fn split(record: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut body = &record[RECORD_HEADER_LEN..];
        let mut out = Vec::new();
        for &n in sizes {
            if body.is_empty() {
                break;
            }
            let (part, rest) = body.split_at(n.min(body.len()));
            out.push(part);
            body = rest;
        }
        if !body.is_empty() {
            out.push(body);
        }
        out.into_iter()
            .map(|part| {
                let mut rec = vec![CONTENT_HANDSHAKE, 3, 1];
                rec.extend((part.len() as u16).to_be_bytes());
                rec.extend(part);
                rec
            })
            .collect()
    }

    fn name_of(record: &[u8]) -> Result<Hello, HelloError> {
        HelloAssembler::new().push_record(record)
    }

    fn complete(name: &str) -> Result<Hello, HelloError> {
        Ok(Hello::Complete {
            server_name: Some(name.into()),
        })
    }

    #[test]
    fn finds_the_name_after_other_extensions() {
        let mut exts = vec![0, 10, 0, 2, 0, 0x1d]; // supported_groups-ish
        exts.extend(sni_ext(b"API.Example.com"));
        assert_eq!(name_of(&hello(Some(exts))), complete("api.example.com"));
    }

    #[test]
    fn no_sni_and_no_extensions_are_none() {
        let none = Ok(Hello::Complete { server_name: None });
        assert_eq!(name_of(&hello(None)), none);
        assert_eq!(name_of(&hello(Some(vec![0, 10, 0, 0]))), none);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let rec = hello(Some(sni_ext(b"localhost")));
        for cut in 0..rec.len() {
            assert!(name_of(&rec[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_anywhere_over_two_records_gives_the_same_name() {
        let rec = hello(Some(sni_ext(b"a.example")));
        let body_len = rec.len() - RECORD_HEADER_LEN;
        for at in 1..body_len {
            let parts = split(&rec, &[at]);
            let mut a = HelloAssembler::new();
            assert_eq!(
                a.push_record(&parts[0]),
                Ok(Hello::Incomplete),
                "split at {at}"
            );
            assert_eq!(
                a.push_record(&parts[1]),
                complete("a.example"),
                "split at {at}"
            );
        }
    }

    #[test]
    fn a_hello_in_one_byte_records_is_assembled() {
        let rec = hello(Some(sni_ext(b"a.example")));
        let parts = split(&rec, &vec![1; rec.len()]);
        let mut a = HelloAssembler::new();
        let (last, init) = parts.split_last().unwrap();
        for p in init {
            assert_eq!(a.push_record(p), Ok(Hello::Incomplete));
        }
        assert_eq!(a.push_record(last), complete("a.example"));
    }

    /// Found by fuzz/src/bin/client_hello.rs (fuzz/corpus/client_hello/crash-sni-trailing-dot):
    /// rustls reads `b.example.` as `b.example`, but this parser reported
    /// `b.example.` (site selection trims dots itself, so only the name kept
    /// for logs and the connection's identity differed from rustls's).
    #[test]
    fn one_trailing_dot_is_dropped_as_rustls_does() {
        assert_eq!(
            name_of(&hello(Some(sni_ext(b"B.Example.")))),
            complete("b.example")
        );
        assert_eq!(
            name_of(&hello(Some(sni_ext(b".")))),
            Err(HelloError::BadServerName)
        );
    }

    #[test]
    fn rejects_hostile_names_and_wrong_records() {
        assert_eq!(
            name_of(&hello(Some(sni_ext(b"a\0b")))),
            Err(HelloError::BadServerName)
        );
        assert_eq!(
            name_of(&hello(Some(sni_ext(b"")))),
            Err(HelloError::BadServerName)
        );
        let mut rec = hello(None);
        rec[0] = 23;
        assert_eq!(name_of(&rec), Err(HelloError::NotHandshake));
        let mut rec = hello(None);
        rec[5] = 2;
        assert_eq!(name_of(&rec), Err(HelloError::NotClientHello));
    }

    #[test]
    fn records_that_are_not_part_of_a_hello_are_refused() {
        let rec = hello(Some(sni_ext(b"a.example")));
        let mut parts = split(&rec, &[10]);
        let mut a = HelloAssembler::new();
        assert_eq!(a.push_record(&parts[0]), Ok(Hello::Incomplete));
        parts[1][0] = 21; // an alert record in the middle of the hello
        assert_eq!(a.push_record(&parts[1]), Err(HelloError::UnexpectedRecord));
        let empty = [CONTENT_HANDSHAKE, 3, 1, 0, 0];
        assert_eq!(name_of(&empty), Err(HelloError::EmptyRecord));
    }

    #[test]
    fn a_hello_announcing_more_than_the_bound_is_refused_at_once() {
        // 4 bytes of handshake header claiming a 16 MiB hello.
        let rec = [
            CONTENT_HANDSHAKE,
            3,
            1,
            0,
            4,
            HANDSHAKE_CLIENT_HELLO,
            0xff,
            0xff,
            0xff,
        ];
        assert_eq!(name_of(&rec), Err(HelloError::TooLarge));
        let mut a = HelloAssembler::new();
        let one = |b: u8| [CONTENT_HANDSHAKE, 3, 1, 0, 1, b];
        assert_eq!(
            a.push_record(&one(HANDSHAKE_CLIENT_HELLO)),
            Ok(Hello::Incomplete)
        );
        assert_eq!(a.push_record(&one(0x00)), Ok(Hello::Incomplete));
        assert_eq!(a.push_record(&one(0x80)), Ok(Hello::Incomplete));
        assert_eq!(a.push_record(&one(0x01)), Err(HelloError::TooLarge));
    }

    #[test]
    fn a_hello_in_too_many_records_is_refused() {
        let rec = [
            CONTENT_HANDSHAKE,
            3,
            1,
            0,
            4,
            HANDSHAKE_CLIENT_HELLO,
            0,
            0x7f,
            0xff,
        ];
        let mut a = HelloAssembler::new();
        assert_eq!(a.push_record(&rec), Ok(Hello::Incomplete));
        let byte = [CONTENT_HANDSHAKE, 3, 1, 0, 1, 0];
        for _ in 1..MAX_HELLO_RECORDS {
            assert_eq!(a.push_record(&byte), Ok(Hello::Incomplete));
        }
        assert_eq!(a.push_record(&byte), Err(HelloError::TooManyRecords));
    }

    #[test]
    fn a_hello_record_longer_than_plaintext_may_be_is_refused() {
        // A hello padded (in an unknown extension) so that its one record
        // holds exactly `body` bytes.
        let padded = |body: usize| {
            let bare = hello(Some(vec![0xff, 0x01, 0, 0])).len() - RECORD_HEADER_LEN;
            let pad = body - bare;
            let mut ext = vec![0xff, 0x01];
            ext.extend((pad as u16).to_be_bytes());
            ext.extend(vec![0u8; pad]);
            hello(Some(ext))
        };
        let fits = padded(MAX_PLAINTEXT_BODY);
        assert_eq!(fits.len(), RECORD_HEADER_LEN + MAX_PLAINTEXT_BODY);
        assert_eq!(name_of(&fits), Ok(Hello::Complete { server_name: None }));
        let over = padded(MAX_PLAINTEXT_BODY + 1);
        assert_eq!(name_of(&over), Err(HelloError::RecordOverflow));
        assert_eq!(HelloError::RecordOverflow.alert(), 22);
    }

    #[test]
    fn lengths_inside_a_complete_hello_are_checked() {
        let mut rec = hello(Some(sni_ext(b"localhost")));
        let ext_len_at = RECORD_HEADER_LEN + 4 + 2 + 32 + 1 + 4 + 2;
        rec[ext_len_at] = 0x7f; // extensions block longer than the hello
        assert_eq!(name_of(&rec), Err(HelloError::Truncated));
    }
}
