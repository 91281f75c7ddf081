//! Human-friendly durations ("250ms", "1m30s") and sizes ("16KiB", 1024).
//!
//! Both parsers return a plain-words reason on failure; the caller adds the
//! file, line and field.

use std::time::Duration;

/// Parses a duration written as one or more `<integer><unit>` parts, e.g.
/// "250ms", "10s", "2m", "1h", "1m30s". Units: ms, s, m, h.
///
/// A bare number is refused on purpose: "10" could mean seconds or
/// milliseconds, and guessing wrong turns a timeout into a hang.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. \"10s\")".to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "\"{s}\" is not a duration (expected a number followed by ms, s, m, h or d, e.g. \"10s\")"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("\"{s}\" is too large a duration"))?;
        let part = match unit {
            "ms" => Some(Duration::from_millis(value)),
            "s" => Some(Duration::from_secs(value)),
            "m" => value.checked_mul(60).map(Duration::from_secs),
            "h" => value.checked_mul(3600).map(Duration::from_secs),
            // Days: certificate lifetimes are written in them (`warn_expiry = "21d"`).
            "d" => value.checked_mul(86_400).map(Duration::from_secs),
            "" => {
                return Err(format!(
                    "\"{s}\" has no unit (write e.g. \"{number}s\" or \"{number}ms\")"
                ))
            }
            other => {
                return Err(format!(
                    "\"{s}\" has unknown unit \"{other}\" (use ms, s, m, h or d)"
                ))
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("\"{s}\" is too large a duration"))?;
        rest = after;
    }
    Ok(total)
}

/// Parses a byte size: a plain integer ("1024") or an integer with a binary
/// unit ("16KiB", "10MiB", "1GiB", "512B"). Units are case-insensitive.
///
/// Decimal units (KB, MB) are refused rather than guessed: half of all
/// configs mean 1024 by them and half mean 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "\"{s}\" is not a size (expected bytes or e.g. \"16KiB\", \"10MiB\", \"1GiB\")"
        ));
    }
    let (number, unit) = text.split_at(digits);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{s}\" is too large a size"))?;
    let unit = unit.trim_start();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" | "mb" | "gb" | "tb" | "k" | "m" | "g" | "t" => {
            return Err(format!(
                "\"{s}\" uses an ambiguous unit \"{unit}\" (write KiB, MiB or GiB, or plain bytes)"
            ))
        }
        _ => {
            return Err(format!(
                "\"{s}\" has unknown unit \"{unit}\" (use B, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{s}\" is too large a size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations() {
        let no_unit = parse_duration("10").unwrap_err();
        assert!(no_unit.contains("no unit"), "{no_unit}");
        let unknown = parse_duration("10y").unwrap_err();
        assert!(unknown.contains("unknown unit \"y\""), "{unknown}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("10 s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2 mib"), Ok(2 << 20));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes() {
        let ambiguous = parse_size("10MB").unwrap_err();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("10XiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
