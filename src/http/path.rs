//! The one normal form of a request path (RFC 3986 §6.2.2 and §5.2.4) that
//! routing, client policy and the backend all see.
//!
//! A gateway that routes on the path as written while its backend resolves
//! `..`, decodes `%61` or merges `//` lets a client pick a route with one
//! spelling and reach another resource with it (`/x/../admin/u` judged by the
//! open `/` route, served as `/admin/u`). So the path is normalised once,
//! before routing, and that normal form is what gets forwarded:
//!
//! - percent-encoded unreserved characters (ALPHA DIGIT `-` `.` `_` `~`) are
//!   decoded, every other escape keeps its byte with upper-case hex;
//! - `.` and `..` segments are removed, also when written encoded (`%2e%2E`);
//!   a `..` that would climb above the root is refused;
//! - repeated slashes are merged (unless `merge_slashes = false`);
//! - `%2F` is refused, kept as data, or decoded into a separator, as
//!   configured; a backslash (raw or `%5C`), `%00`, a broken escape and an
//!   overlong UTF-8 encoding (`%C0%AE` for `.`) are always refused, since
//!   some backends read them as `/`, end-of-string or `.`.
//!
//! `;` parameters are left in the path, and [`strip_params`] gives the view a
//! servlet container routes on (parameters dropped), so the caller can refuse
//! a path whose route depends on which reading the backend uses.
//!
//! Pure functions over strings: no I/O, tested byte by byte below.

use super::HttpError;

/// What `%2F` in a request path means (Envoy's `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// 400 `PCS.4006`: the safe default, since backends disagree on `%2F`.
    #[default]
    Reject,
    /// Forwarded as `%2F`, never a separator for routing or dot segments.
    /// Unsafe with a backend that decodes it before resolving `..`.
    Keep,
    /// Decoded into `/` and treated as a separator everywhere.
    Decode,
}

/// How request paths are normalised (`[paths]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathOptions {
    pub escaped_slashes: EscapedSlashes,
    /// Merge `//` into `/` (the default: most backends do, so routing must too).
    pub merge_slashes: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            escaped_slashes: EscapedSlashes::Reject,
            merge_slashes: true,
        }
    }
}

const INVALID_ESCAPE: HttpError =
    HttpError::Malformed("invalid percent-encoding in the request path");
const OVERLONG: HttpError = HttpError::Malformed("overlong UTF-8 sequence in the request path");
const INVALID_CHAR: HttpError = HttpError::Malformed("invalid character in the request path");

/// Appends the normal form of `raw` to `out`.
///
/// `raw` is an origin-form path: it starts with `/` and holds no query (the
/// caller splits at `?` and forwards the query untouched). On error `out` may
/// hold a partial result; callers clear it before reuse.
pub fn normalize_path(raw: &str, opts: &PathOptions, out: &mut String) -> Result<(), HttpError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(HttpError::Malformed("request path must start with /"));
    }
    let root = out.len();
    out.push('/');
    let mut i = 1;
    loop {
        // One segment: from `i` up to a separator or the end.
        let seg_start = out.len();
        // The previous decoded escape, when the byte just before was one:
        // overlong UTF-8 is two escapes in a row.
        let mut prev_escape: Option<u8> = None;
        let mut separator_len = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'/' => {
                    separator_len = 1;
                    break;
                }
                b'%' => {
                    let v = match (bytes.get(i + 1), bytes.get(i + 2)) {
                        (Some(&h), Some(&l)) => match (hex_value(h), hex_value(l)) {
                            (Some(h), Some(l)) => h << 4 | l,
                            _ => return Err(INVALID_ESCAPE),
                        },
                        _ => return Err(INVALID_ESCAPE),
                    };
                    if prev_escape.is_some_and(|lead| is_overlong(lead, v)) {
                        return Err(OVERLONG);
                    }
                    match v {
                        b'/' => match opts.escaped_slashes {
                            EscapedSlashes::Reject => return Err(HttpError::EncodedSlash),
                            EscapedSlashes::Keep => out.push_str("%2F"),
                            EscapedSlashes::Decode => {
                                separator_len = 3;
                                break;
                            }
                        },
                        b'\\' => return Err(HttpError::PathBackslash),
                        0 => return Err(HttpError::EncodedNul),
                        v if is_unreserved(v) => out.push(char::from(v)),
                        v => push_escape(out, v),
                    }
                    prev_escape = Some(v);
                    i += 3;
                    continue;
                }
                b'\\' => return Err(HttpError::PathBackslash),
                // The request parser already refuses these (httparse: controls
                // and space; ours: non-ASCII, `#`); refused again so the
                // function is safe on any input.
                b if b <= b' ' || b >= 0x7f || b == b'?' || b == b'#' => return Err(INVALID_CHAR),
                b => out.push(char::from(b)),
            }
            prev_escape = None;
            i += 1;
        }
        let last = separator_len == 0;
        match &out[seg_start..] {
            "." => out.truncate(seg_start),
            ".." => {
                // `out` is ".../prev/..": drop "..", then "prev/".
                if seg_start == root + 1 {
                    return Err(HttpError::PathAboveRoot);
                }
                let parent = out[root..seg_start - 1].rfind('/').map_or(0, |p| p + 1);
                out.truncate(root + parent);
            }
            "" if opts.merge_slashes => {}
            _ if !last => out.push('/'),
            _ => {}
        }
        if last {
            return Ok(());
        }
        i += separator_len;
    }
}

/// The path a servlet container (Tomcat, Jetty) routes on: each segment's
/// `;` parameters dropped, then empty segments merged as `opts` says. Only
/// meaningful on a path already in normal form. A parameter on a dot segment
/// (`/..;x/`) is refused: the container resolves it, the normal form did not.
pub fn strip_params(normal: &str, opts: &PathOptions, out: &mut String) -> Result<(), HttpError> {
    let mut segments = normal.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let name = match segment.split_once(';') {
            Some((name, _)) => {
                if name == "." || name == ".." {
                    return Err(HttpError::AmbiguousPathParams);
                }
                name
            }
            None => segment,
        };
        if name.is_empty() && opts.merge_slashes && !last {
            continue;
        }
        out.push('/');
        out.push_str(name);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(())
}

/// Why a configured route path (or rewrite prefix) is not usable as one, if
/// it is not. A configured prefix must be in normal form and may hold only
/// characters a client cannot spell another way: unreserved characters,
/// `/`, and escapes of non-ASCII bytes (which never appear raw in a request).
/// A sub-delimiter such as `:` or `;` could arrive raw or encoded, and a
/// backend that decodes would see the same path, so it is not allowed.
pub fn route_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("\"{path}\" must start with \"/\""));
    }
    let mut normal = String::with_capacity(path.len());
    if let Err(e) = normalize_path(path, &PathOptions::default(), &mut normal) {
        return Some(format!("\"{path}\": {}", e.message()));
    }
    if normal != path {
        return Some(format!(
            "\"{path}\" is not in normal form (no \".\" or \"..\" segments, no \"//\", unreserved characters unescaped, upper-case hex): write \"{normal}\""
        ));
    }
    // In normal form every escape is well formed, so `%` is followed by two hex digits.
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let ok = if b == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            i += 2;
            high.is_some_and(|h| h >= 8)
        } else {
            b == b'/' || is_unreserved(b)
        };
        if !ok {
            return Some(format!(
                "\"{path}\" may contain only letters, digits, \"-\", \".\", \"_\", \"~\", \"/\" and percent-escapes of non-ASCII bytes (a client could write any other character both raw and escaped)"
            ));
        }
        i += 1;
    }
    None
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(v >> 4)]));
    out.push(char::from(HEX[usize::from(v & 0xf)]));
}

/// Whether `lead` then `next` start an overlong UTF-8 encoding: a longer
/// form of a code point that has a shorter one (`C0 AE` is `.`). Lenient
/// decoders have turned these into `.`, `/` and `\`; no valid UTF-8 has them.
fn is_overlong(lead: u8, next: u8) -> bool {
    matches!(
        (lead, next),
        (0xC0 | 0xC1, 0x80..=0xBF) | (0xE0, 0x80..=0x9F) | (0xF0, 0x80..=0x8F)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm_with(raw: &str, opts: PathOptions) -> Result<String, HttpError> {
        let mut out = String::new();
        normalize_path(raw, &opts, &mut out).map(|()| out)
    }

    fn norm(raw: &str) -> Result<String, HttpError> {
        norm_with(raw, PathOptions::default())
    }

    fn ok(cases: &[(&str, &str)]) {
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(*want), "{raw:?}");
            // The normal form is a fixed point.
            assert_eq!(norm(want).as_deref(), Ok(*want), "{want:?} again");
        }
    }

    #[test]
    fn already_normal_paths_are_unchanged() {
        ok(&[
            ("/", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("/a/b/c.json", "/a/b/c.json"),
            ("/a-b_c.d~e/f", "/a-b_c.d~e/f"),
            ("/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9"),
            ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
            ("/..a/a../...", "/..a/a../..."),
            ("/.a/a./.", "/.a/a./"),
        ]);
    }

    #[test]
    fn dot_segments_are_removed() {
        ok(&[
            ("/.", "/"),
            ("/./", "/"),
            ("/a/.", "/a/"),
            ("/a/./b/", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/../../c", "/c"),
            ("/x/../admin/u", "/admin/u"),
            ("/a/./../b/./c/..", "/b/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/.../b", "/a/.../b"),
        ]);
    }

    #[test]
    fn dot_segments_written_encoded() {
        ok(&[
            ("/x/%2e%2e/admin/u", "/admin/u"),
            ("/x/%2E%2e/admin/u", "/admin/u"),
            ("/x/.%2E/admin", "/admin"),
            ("/x/%2e/y", "/x/y"),
            ("/a/%2e%2e%2e", "/a/..."),
        ]);
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for raw in [
            "/..",
            "/../",
            "/../a",
            "/../../etc/passwd",
            "/a/../..",
            "/a/../../",
            "/a/b/../../..",
            "/%2e%2e",
            "/./..",
            "//..",
            "/a//../..",
        ] {
            assert_eq!(norm(raw), Err(HttpError::PathAboveRoot), "{raw:?}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        ok(&[
            ("/%61dmin/u", "/admin/u"),
            ("/%61%64%6D%69%6e", "/admin"),
            ("/%41%5A%30%39%2D%2E%5F%7E", "/AZ09-._~"),
            ("/%7euser", "/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%2cb%3b%3D", "/a%2Cb%3B%3D"),
            ("/%c3%a9", "/%C3%A9"),
            ("/%C3%a9", "/%C3%A9"),
            ("/%25", "/%25"),
            ("/%252e%252e", "/%252e%252e"),
            ("/%3F%23", "/%3F%23"),
            ("/%ff", "/%FF"),
        ]);
    }

    #[test]
    fn broken_escapes_are_refused() {
        for raw in [
            "/%", "/a%", "/%2", "/a%2", "/%zz", "/%g0", "/%0g", "/%%", "/%%41", "/%+1", "/% 1",
            "/%-1",
        ] {
            assert!(
                matches!(norm(raw), Err(HttpError::Malformed(m)) if m.contains("percent")),
                "{raw:?}: {:?}",
                norm(raw)
            );
        }
    }

    #[test]
    fn separators_and_nul_in_disguise() {
        assert_eq!(norm("/a%2Fb"), Err(HttpError::EncodedSlash));
        assert_eq!(norm("/a%2fb"), Err(HttpError::EncodedSlash));
        assert_eq!(norm("/..%2F"), Err(HttpError::EncodedSlash));
        for raw in ["/a%5Cb", "/a%5cb", "/a\\b", "/\\", "/..\\admin"] {
            assert_eq!(norm(raw), Err(HttpError::PathBackslash), "{raw:?}");
        }
        assert_eq!(norm("/a%00"), Err(HttpError::EncodedNul));
        assert_eq!(norm("/a%00.json"), Err(HttpError::EncodedNul));
        // Other encoded controls keep their escape: they are data, not separators.
        ok(&[("/a%0D%0a", "/a%0D%0A"), ("/%7f", "/%7F")]);
    }

    #[test]
    fn overlong_utf8_is_refused() {
        for raw in [
            "/%c0%ae%c0%ae/admin",
            "/%C0%AF",
            "/%c1%9c",
            "/%e0%80%ae",
            "/%e0%9f%bf",
            "/%f0%80%80%ae",
            "/%f0%8f%bf%bf",
        ] {
            assert!(
                matches!(norm(raw), Err(HttpError::Malformed(m)) if m.contains("overlong")),
                "{raw:?}: {:?}",
                norm(raw)
            );
        }
        // Valid multi-byte sequences and lone lead bytes (Latin-1) are data.
        ok(&[
            ("/%c2%a0", "/%C2%A0"),
            ("/%e0%a0%80", "/%E0%A0%80"),
            ("/%f0%90%80%80", "/%F0%90%80%80"),
            ("/%c0", "/%C0"),
            ("/%c0a", "/%C0a"),
            ("/%c0/%ae", "/%C0/%AE"),
        ]);
    }

    #[test]
    fn repeated_slashes_merge_by_default() {
        ok(&[
            ("//", "/"),
            ("///", "/"),
            ("//admin/u", "/admin/u"),
            ("/a//b", "/a/b"),
            ("/a///b//", "/a/b/"),
            ("/a//", "/a/"),
            ("/a//./b", "/a/b"),
            ("/a/b//..", "/a/"),
        ]);
        let keep = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        for (raw, want) in [
            ("//", "//"),
            ("//admin/u", "//admin/u"),
            ("/a//b", "/a//b"),
            ("/a//..", "/a/"),
            ("/a//../b", "/a/b"),
            ("//./a", "//a"),
        ] {
            assert_eq!(norm_with(raw, keep).as_deref(), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn escaped_slash_policies() {
        let keep = PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathOptions::default()
        };
        for (raw, want) in [
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/x/..%2F..%2Fa", "/x/..%2F..%2Fa"),
            ("/%2F", "/%2F"),
        ] {
            assert_eq!(norm_with(raw, keep).as_deref(), Ok(want), "{raw:?}");
        }
        let decode = PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            ..PathOptions::default()
        };
        for (raw, want) in [
            ("/a%2fb", "/a/b"),
            ("/a%2F..%2Fc", "/c"),
            ("/a%2F%2Fb", "/a/b"),
            ("/a%2F", "/a/"),
            ("/%2F", "/"),
        ] {
            assert_eq!(norm_with(raw, decode).as_deref(), Ok(want), "{raw:?}");
        }
        assert_eq!(
            norm_with("/a%2F..%2F..", decode),
            Err(HttpError::PathAboveRoot)
        );
        // The backslash and NUL rules do not depend on the slash policy.
        assert_eq!(norm_with("/a%5C", keep), Err(HttpError::PathBackslash));
        assert_eq!(norm_with("/a%00", decode), Err(HttpError::EncodedNul));
    }

    #[test]
    fn hostile_input_is_refused_not_misread() {
        for raw in ["", "a", "*", "%2F", "./a"] {
            assert!(matches!(norm(raw), Err(HttpError::Malformed(_))), "{raw:?}");
        }
        for raw in [
            "/a b", "/a\tb", "/a\0b", "/a\x7fb", "/\u{e9}", "/a?b", "/a#b",
        ] {
            assert_eq!(norm(raw), Err(INVALID_CHAR), "{raw:?}");
        }
        // Long input: linear, no recursion, exact result.
        let deep = "/a".repeat(20_000) + &"/..".repeat(20_000);
        assert_eq!(norm(&deep).as_deref(), Ok("/"));
        let climb = "/a".repeat(10_000) + &"/..".repeat(10_001);
        assert_eq!(norm(&climb), Err(HttpError::PathAboveRoot));
        let slashes = "/".repeat(50_000) + "x";
        assert_eq!(norm(&slashes).as_deref(), Ok("/x"));
        // Appends after what `out` already holds, and measures from there.
        let mut out = String::from("GET ");
        normalize_path("/a/../b", &PathOptions::default(), &mut out).unwrap();
        assert_eq!(out, "GET /b");
        let mut out = String::from("/x/y");
        assert_eq!(
            normalize_path("/..", &PathOptions::default(), &mut out),
            Err(HttpError::PathAboveRoot)
        );
    }

    #[test]
    fn params_view() {
        let strip = |p: &str, opts: PathOptions| {
            let mut out = String::new();
            strip_params(p, &opts, &mut out).map(|()| out)
        };
        let d = PathOptions::default();
        for (normal, want) in [
            ("/", "/"),
            ("/a;x", "/a"),
            ("/admin;jsessionid=1/u", "/admin/u"),
            ("/a;x/b;y/", "/a/b/"),
            ("/a/b;", "/a/b"),
            ("/;x/admin", "/admin"),
            ("/;x", "/"),
            ("/a/;x", "/a/"),
            ("/a;b;c/d", "/a/d"),
            ("/no/params", "/no/params"),
        ] {
            assert_eq!(strip(normal, d).as_deref(), Ok(want), "{normal:?}");
        }
        let keep = PathOptions {
            merge_slashes: false,
            ..d
        };
        assert_eq!(strip("/;x/admin", keep).as_deref(), Ok("//admin"));
        for normal in ["/..;/admin", "/x/..;x/admin", "/.;x/a", "/a/..;"] {
            assert_eq!(
                strip(normal, d),
                Err(HttpError::AmbiguousPathParams),
                "{normal:?}"
            );
        }
    }

    #[test]
    fn route_paths() {
        for good in ["/", "/api", "/api/", "/a-b/c_d/e.f/~g", "/caf%C3%A9/"] {
            assert_eq!(route_path_problem(good), None, "{good:?}");
        }
        for (bad, why) in [
            ("api", "start with"),
            ("/api/../x", "write \"/x\""),
            ("/api//x", "write \"/api/x\""),
            ("/./api", "write \"/api\""),
            ("/%61pi", "write \"/api\""),
            ("/caf%c3%a9", "write \"/caf%C3%A9\""),
            ("/api;v=1", "letters"),
            ("/a:b", "letters"),
            ("/a%2Fb", "%2F"),
            ("/a%20b", "letters"),
            ("/a%", "percent"),
            ("/a%C", "percent"),
            ("/..", "climbs"),
            ("/a b", "invalid character"),
        ] {
            let got = route_path_problem(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad:?}: {got:?}");
        }
    }
}
