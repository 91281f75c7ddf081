//! Fuzz target: `http::path::normalize_path` and `strip_params` under every
//! `[paths]` setting (escaped slashes rejected, kept or decoded; slashes
//! merged or not).
//!
//! Routing, client policy and the backend all see the normal form, so it
//! must really be one: normalising it again changes nothing, and it holds no
//! spelling a backend could read differently (no `.` or `..` segment, no
//! escaped unreserved character, upper-case hex only, no `%2F` unless kept,
//! no `//` when merged, no backslash or NUL). The function appends to its
//! output buffer, so a buffer that already holds text must get the same
//! result after it (dot segments must not climb into that text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::path::{normalize_path, strip_params, EscapedSlashes, PathOptions};

fuzz_target!(|data: &[u8]| {
    // The proxy hands over the target up to `?`; any str must be safe anyway.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for escaped_slashes in [
        EscapedSlashes::Reject,
        EscapedSlashes::Keep,
        EscapedSlashes::Decode,
    ] {
        for merge_slashes in [true, false] {
            let opts = PathOptions {
                escaped_slashes,
                merge_slashes,
            };
            let mut normal = String::new();
            let verdict = normalize_path(raw, &opts, &mut normal);

            let mut prefixed = String::from("/pre/fix");
            let prefixed_verdict = normalize_path(raw, &opts, &mut prefixed);
            assert_eq!(prefixed_verdict, verdict, "{opts:?}: depends on the buffer");
            if verdict.is_err() {
                continue;
            }
            assert_eq!(
                &prefixed["/pre/fix".len()..],
                normal,
                "{opts:?}: climbed into the buffer"
            );

            check_normal_form(&normal, &opts);
            let mut again = String::new();
            let second = normalize_path(&normal, &opts, &mut again);
            assert_eq!(
                second,
                Ok(()),
                "{opts:?}: the normal form {normal:?} is refused"
            );
            assert_eq!(
                again, normal,
                "{opts:?}: normalising {normal:?} again changed it"
            );

            let mut servlet = String::new();
            if strip_params(&normal, &opts, &mut servlet).is_ok() {
                assert!(servlet.starts_with('/'), "{opts:?}: {servlet:?}");
            }
        }
    }
});

fn check_normal_form(normal: &str, opts: &PathOptions) {
    assert!(normal.starts_with('/'), "{normal:?}");
    assert!(
        normal.is_ascii() && !normal.contains(['\\', '?', '#']),
        "{normal:?}"
    );
    if opts.merge_slashes {
        assert!(!normal.contains("//"), "{opts:?}: {normal:?} keeps //");
    }
    for segment in normal.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{normal:?} keeps a dot segment"
        );
    }
    let bytes = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("escape cut short");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{normal:?}: escape {:?} not in upper-case hex",
            String::from_utf8_lossy(hex)
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16);
        let value = value.expect("hex checked above");
        assert!(
            !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
            "{normal:?}: escaped unreserved character"
        );
        assert!(
            value != 0 && value != b'\\',
            "{normal:?}: escaped NUL or backslash"
        );
        if value == b'/' {
            assert_eq!(opts.escaped_slashes, EscapedSlashes::Keep, "{normal:?}");
        }
    }
}
