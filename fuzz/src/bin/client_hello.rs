//! Fuzz target: `tls::client_hello::HelloAssembler`, fed the records of an
//! arbitrary byte stream one by one, exactly as the handshake reads them
//! (5-byte header, then the body; a body longer than `MAX_RECORD_BODY` ends
//! the connection before the assembler sees it).
//!
//! Properties, beyond "never panics":
//! - reassembly: the handshake bytes of those records, put in one record,
//!   give the same verdict (the same name, or the same complaint about the
//!   hello's contents), and so does any other split of them into records;
//! - the site is chosen from our name before rustls runs, so where rustls's
//!   own parser (`rustls::server::Acceptor`, given the same records) accepts
//!   the hello, it must have read the same server name. The one allowed
//!   difference: an IP address sent as a host name, which RFC 6066 forbids
//!   and rustls treats as no name at all (see `same_name`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::tls::client_hello::{
    record_body_len, Hello, HelloAssembler, HelloError, MAX_RECORD_BODY, RECORD_HEADER_LEN,
};
use portcullis_fuzz::Pieces;

const CONTENT_HANDSHAKE: u8 = 22;
/// The u16 length field of a record header.
const MAX_LEN_FIELD: usize = u16::MAX as usize;

fuzz_target!(|data: &[u8]| {
    let mut assembler = HelloAssembler::new();
    let mut rest = data;
    let mut consumed = 0;
    let mut joined = Vec::new();
    let verdict = loop {
        let Some(header) = rest.first_chunk::<RECORD_HEADER_LEN>() else {
            break Ok(Hello::Incomplete);
        };
        let body_len = record_body_len(header);
        if body_len > MAX_RECORD_BODY || rest.len() < RECORD_HEADER_LEN + body_len {
            break Ok(Hello::Incomplete); // the stream ends (or is cut) here
        }
        let (record, tail) = rest.split_at(RECORD_HEADER_LEN + body_len);
        joined.extend_from_slice(&record[RECORD_HEADER_LEN..]);
        consumed += record.len();
        rest = tail;
        match assembler.push_record(record) {
            Ok(Hello::Incomplete) => {}
            done => break done,
        }
    };
    if let Err(e) = &verdict {
        let _ = (e.alert(), e.to_string());
    }
    let about_contents = match &verdict {
        Ok(_) => true,
        Err(e) => matches!(
            e,
            HelloError::NotClientHello
                | HelloError::TooLarge
                | HelloError::Truncated
                | HelloError::BadServerName
        ),
    };
    if !about_contents {
        return; // a complaint about the records themselves, not the hello
    }
    let complete = matches!(verdict, Ok(Hello::Complete { .. }));
    // Only the hello's own bytes (at most 32 KiB + 4) decide a verdict; what
    // follows it in the last record may be cut to fit one record.
    joined.truncate(MAX_LEN_FIELD);
    if !joined.is_empty() {
        let one = HelloAssembler::new().push_record(&record(&joined));
        assert_eq!(one, verdict, "one record vs the records as sent");
    }

    if complete {
        let seed = data.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        let mut pieces = Pieces::new(seed);
        let mut again = HelloAssembler::new();
        let mut rest = &joined[..];
        // Stay under MAX_HELLO_RECORDS, which this property is not about.
        let min_piece = joined.len() / 2048 + 1;
        let resplit = loop {
            if rest.is_empty() {
                break Ok(Hello::Incomplete);
            }
            let n = pieces.next(rest.len()).max(min_piece).min(rest.len());
            let (part, tail) = rest.split_at(n);
            rest = tail;
            match again.push_record(&record(part)) {
                Ok(Hello::Incomplete) => {}
                done => break done,
            }
        };
        assert_eq!(resplit, verdict, "another split of the same hello");

        let Ok(Hello::Complete { server_name }) = &verdict else {
            unreachable!()
        };
        check_against_rustls(&data[..consumed], server_name.as_deref());
    }
});

fn record(body: &[u8]) -> Vec<u8> {
    let mut r = vec![CONTENT_HANDSHAKE, 3, 1];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// Feeds rustls's Acceptor the records the assembler consumed.
fn check_against_rustls(records: &[u8], ours: Option<&str>) {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut input = records;
    let accepted = loop {
        match acceptor.read_tls(&mut input) {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break Some(accepted),
            Ok(None) if input.is_empty() => {
                panic!("rustls wants more of a hello we read as complete (ours: {ours:?})")
            }
            Ok(None) => {}
            Err(_) => break None, // rustls refuses it: the handshake fails, no harm
        }
    };
    if let Some(accepted) = accepted {
        let theirs = accepted.client_hello().server_name().map(str::to_string);
        assert!(
            same_name(ours, theirs.as_deref()),
            "site chosen for {ours:?}, rustls read {theirs:?}"
        );
    }
}

fn same_name(ours: Option<&str>, theirs: Option<&str>) -> bool {
    match (ours, theirs) {
        (Some(ip), None) => ip.parse::<std::net::IpAddr>().is_ok(),
        _ => ours == theirs,
    }
}
