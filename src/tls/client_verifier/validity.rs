//! A certificate's validity (RFC 5280 §4.1.2.5: notBefore, notAfter), read
//! straight from its DER, and the window a verified chain stays valid in.
//!
//! The verified-chain cache (`cache`) must know when a chain it remembers
//! stops being one webpki would accept. webpki reads these times but keeps
//! them private, and x509-parser would build a whole certificate tree for two
//! timestamps; this walks the five TLV headers in front of them (with
//! `key_usage`'s reader: every length checked) and parses the times exactly
//! as webpki does (UTCTime years 50-99 are 19xx, GeneralizedTime has four
//! digits; both `YYMMDDHHMMSSZ` forms, seconds required, no fractions, no
//! other zone). Anything else is `Malformed`, and the caller then does not
//! cache: a certificate this cannot read is always verified in full. Pure: no
//! I/O.

use rustls::pki_types::UnixTime;

use super::super::key_usage::{Malformed, Reader};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `version [0] EXPLICIT` in the TBSCertificate (absent for v1).
const VERSION: u8 = 0xA0;

/// Seconds since the Unix epoch, both ends inclusive, as webpki checks them
/// (`time < notBefore` is not yet valid, `time > notAfter` expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub not_before: u64,
    pub not_after: u64,
}

impl Window {
    pub fn contains(self, now: UnixTime) -> bool {
        (self.not_before..=self.not_after).contains(&now.as_secs())
    }

    /// The times both windows hold: the later notBefore, the earlier notAfter.
    pub fn narrow(self, other: Window) -> Window {
        Window {
            not_before: self.not_before.max(other.not_before),
            not_after: self.not_after.min(other.not_after),
        }
    }
}

/// The validity of the certificate `cert_der`.
pub fn validity(cert_der: &[u8]) -> Result<Window, Malformed> {
    let mut outer = Reader(cert_der);
    let certificate = outer.expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err(Malformed("data after the certificate"));
    }
    let tbs = Reader(certificate).expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut fields = Reader(tbs);
    if fields.peek_tag() == Some(VERSION) {
        fields.next()?;
    }
    fields.expect(INTEGER, "serialNumber is not an INTEGER")?;
    fields.expect(SEQUENCE, "signature is not a SEQUENCE")?;
    fields.expect(SEQUENCE, "issuer is not a SEQUENCE")?;
    let mut times = Reader(fields.expect(SEQUENCE, "validity is not a SEQUENCE")?);
    let not_before = time(&mut times)?;
    let not_after = time(&mut times)?;
    if !times.is_empty() {
        return Err(Malformed("data after notAfter"));
    }
    if not_before > not_after {
        return Err(Malformed("notBefore is after notAfter"));
    }
    Ok(Window {
        not_before,
        not_after,
    })
}

/// One UTCTime or GeneralizedTime, as seconds since the epoch.
fn time(reader: &mut Reader<'_>) -> Result<u64, Malformed> {
    let (tag, value) = reader.next()?;
    let (year, rest) = match (tag, value.len()) {
        (UTC_TIME, 13) => {
            let yy = two_digits(value, 0)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &value[2..])
        }
        (GENERALIZED_TIME, 15) => (
            two_digits(value, 0)? * 100 + two_digits(value, 2)?,
            &value[4..],
        ),
        _ => {
            return Err(Malformed(
                "a validity time is not a UTCTime or GeneralizedTime",
            ))
        }
    };
    // rest: MMDDHHMMSSZ
    let month = two_digits(rest, 0)?;
    let day = two_digits(rest, 2)?;
    let hour = two_digits(rest, 4)?;
    let minute = two_digits(rest, 6)?;
    let second = two_digits(rest, 8)?;
    if rest[10] != b'Z'
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(Malformed("a validity time is out of range"));
    }
    // webpki refuses times before the epoch; so does this.
    let days =
        days_since_epoch(year, month, day).ok_or(Malformed("a validity time before 1970"))?;
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn two_digits(bytes: &[u8], at: usize) -> Result<u64, Malformed> {
    match bytes.get(at..at + 2) {
        Some([hi @ b'0'..=b'9', lo @ b'0'..=b'9']) => {
            Ok(u64::from(hi - b'0') * 10 + u64::from(lo - b'0'))
        }
        _ => Err(Malformed("a validity time has a non-digit")),
    }
}

fn is_leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date; None before it.
fn days_since_epoch(year: u64, month: u64, day: u64) -> Option<u64> {
    let years = year.checked_sub(1970)?;
    // Leap days in the years 1970..year: multiples of 4, 100 and 400 below
    // `year`, counted from year 0 and minus those before 1970.
    let leaps = |y: u64| y / 4 - y / 100 + y / 400;
    let leap_days = leaps(year - 1) - leaps(1969);
    let month_days: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    Some(years * 365 + leap_days + month_days + day - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        assert!(value.len() < 0x80);
        let mut out = vec![tag, value.len() as u8];
        out.extend_from_slice(value);
        out
    }

    /// A certificate-shaped DER around the given validity contents.
    fn cert(version: bool, validity: &[u8]) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(VERSION, &[0x02, 0x01, 0x02]));
        }
        tbs.extend(tlv(INTEGER, &[0x01]));
        tbs.extend(tlv(SEQUENCE, &[0x06, 0x01, 0x2a]));
        tbs.extend(tlv(SEQUENCE, b""));
        tbs.extend(tlv(SEQUENCE, validity));
        tbs.extend(tlv(SEQUENCE, b""));
        tlv(SEQUENCE, &tlv(SEQUENCE, &tbs))
    }

    fn times(a: (u8, &str), b: (u8, &str)) -> Vec<u8> {
        [tlv(a.0, a.1.as_bytes()), tlv(b.0, b.1.as_bytes())].concat()
    }

    #[test]
    fn both_time_forms_as_webpki_reads_them() {
        let v = validity(&cert(
            true,
            &times(
                (UTC_TIME, "700101000000Z"),
                (GENERALIZED_TIME, "20491231235959Z"),
            ),
        ))
        .unwrap();
        assert_eq!(v.not_before, 0);
        assert_eq!(v.not_after, 2_524_607_999);
        // UTCTime 49 is 2049, 50 is 1950 (before the epoch: refused).
        let v = validity(&cert(
            false,
            &times((UTC_TIME, "000229120000Z"), (UTC_TIME, "491231235959Z")),
        ))
        .unwrap();
        assert_eq!(v.not_before, 951_825_600, "2000-02-29 12:00:00");
        assert_eq!(v.not_after, 2_524_607_999);
        assert!(validity(&cert(
            false,
            &times((UTC_TIME, "500101000000Z"), (UTC_TIME, "491231235959Z"))
        ))
        .is_err());
    }

    #[test]
    fn anything_webpki_would_not_read_is_malformed() {
        let good = (GENERALIZED_TIME, "20300101000000Z");
        for bad in [
            (UTC_TIME, "7001010000Z"),               // no seconds
            (UTC_TIME, "700101000000+0100"),         // a zone
            (GENERALIZED_TIME, "20300101000000.5Z"), // a fraction
            (GENERALIZED_TIME, "20300230000000Z"),   // 30 February
            (GENERALIZED_TIME, "21000229000000Z"),   // 2100 is not a leap year
            (GENERALIZED_TIME, "20301301000000Z"),
            (GENERALIZED_TIME, "20300101240000Z"),
            (GENERALIZED_TIME, "2030010100000AZ"),
            (0x04, "20300101000000Z"),
        ] {
            assert!(validity(&cert(true, &times(bad, good))).is_err(), "{bad:?}");
            assert!(validity(&cert(true, &times(good, bad))).is_err(), "{bad:?}");
        }
        // notBefore after notAfter; a third time; a missing one.
        let later = (GENERALIZED_TIME, "20310101000000Z");
        assert!(validity(&cert(true, &times(later, good))).is_err());
        let three = [times(good, later), tlv(later.0, later.1.as_bytes())].concat();
        assert!(validity(&cert(true, &three)).is_err());
        assert!(validity(&cert(true, &tlv(good.0, good.1.as_bytes()))).is_err());
        // Trailing data after the certificate.
        let mut trailing = cert(true, &times(good, later));
        trailing.push(0);
        assert!(validity(&trailing).is_err());
        assert!(validity(&[]).is_err());
    }

    #[test]
    fn days_agree_with_the_calendar() {
        // Every first of January from 1970 to 2400, against a running count.
        let mut days = 0;
        for year in 1970..2400 {
            assert_eq!(days_since_epoch(year, 1, 1), Some(days), "{year}");
            days += if is_leap(year) { 366 } else { 365 };
        }
        assert_eq!(days_since_epoch(1969, 12, 31), None);
        assert_eq!(days_since_epoch(2026, 12, 1), Some(20_788));
    }

    #[test]
    fn real_certificates_read_as_x509_parser_reads_them() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050
        // (RFC 5280 §4.1.2.5), with or without a version field.
        let key = rcgen::KeyPair::generate().unwrap();
        let dates = [
            (1975, 1, 1, 0, 0, 0),
            (2000, 2, 29, 23, 59, 59),
            (2026, 12, 1, 14, 46, 36),
            (2049, 12, 31, 23, 59, 59),
            (2050, 1, 1, 0, 0, 0),
            (2100, 3, 1, 12, 0, 1),
            (4096, 1, 1, 0, 0, 0),
        ];
        for (i, &(y, mo, d, h, mi, s)) in dates.iter().enumerate() {
            let t = time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d)
                .unwrap()
                .with_hms(h, mi, s)
                .unwrap()
                .assume_utc();
            let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
            p.not_before = dates.get(i.wrapping_sub(1)).map_or(t, |&(y, ..)| {
                time::Date::from_calendar_date(y, time::Month::January, 1)
                    .unwrap()
                    .midnight()
                    .assume_utc()
            });
            p.not_after = t;
            let cert = p.self_signed(&key).unwrap();
            let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
            let ours = validity(cert.der()).unwrap();
            assert_eq!(
                ours.not_before as i64,
                parsed.validity().not_before.timestamp(),
                "{t}"
            );
            assert_eq!(
                ours.not_after as i64,
                parsed.validity().not_after.timestamp(),
                "{t}"
            );
            assert_eq!(ours.not_after as i64, t.unix_timestamp(), "{t}");
        }
    }

    #[test]
    fn windows_narrow_and_contain_inclusively() {
        let a = Window {
            not_before: 10,
            not_after: 100,
        };
        let b = Window {
            not_before: 20,
            not_after: 200,
        };
        assert_eq!(
            a.narrow(b),
            Window {
                not_before: 20,
                not_after: 100
            }
        );
        let at = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        assert!(!a.contains(at(9)));
        assert!(a.contains(at(10)) && a.contains(at(100)));
        assert!(!a.contains(at(101)));
    }
}
