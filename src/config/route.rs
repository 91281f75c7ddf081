//! `[[route]]`: where a request goes, who may send it, and what the backend
//! is told about the client.

use super::field::{Field, Problem};
use super::names::{is_token_byte, methods, parse_host_match};
use super::{
    addr, BodyDeadline, ClientPolicy, HeaderRules, IdentityForwarding, Limits, MtlsMode,
    RouteConfig, SiteConfig, Timeouts, UpstreamConfig,
};
use crate::http::path::route_path_problem;
use crate::http::request::same_field_name;
use crate::identity::{parse_fingerprint, Allowlist};

/// Default names of the identity headers; incoming copies are always stripped.
pub const DEFAULT_ESCAPED_PEM: &str = "X-SSL-Client-Cert";
pub const DEFAULT_CLIENT_CERT: &str = "Client-Cert";
pub const DEFAULT_CLIENT_CERT_CHAIN: &str = "Client-Cert-Chain";
pub const DEFAULT_XFCC: &str = "X-Forwarded-Client-Cert";
pub const DEFAULT_SUBJECT: &str = "X-SSL-Client-Subject";
pub const DEFAULT_FINGERPRINT: &str = "X-SSL-Client-Fingerprint";

/// Headers no rule may set, add or remove: framing and hop-by-hop ones are
/// the proxy's to decide, and it writes X-Forwarded-For/-Proto/-Host and
/// X-Real-IP itself. Compared as a CGI backend compares names, so
/// `X_Real_IP` is refused too.
const RESERVED: [&str; 13] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// ... and for set/add/remove rules, the default identity header names too:
/// a constant must not pass for a verified certificate.
const IDENTITY_DEFAULTS: [&str; 6] = [
    DEFAULT_ESCAPED_PEM,
    DEFAULT_CLIENT_CERT,
    DEFAULT_CLIENT_CERT_CHAIN,
    DEFAULT_XFCC,
    DEFAULT_SUBJECT,
    DEFAULT_FINGERPRINT,
];

pub(super) fn route(
    field: Field,
    index: usize,
    limits: &Limits,
    timeouts: &Timeouts,
    sites: &[SiteConfig],
    upstreams: &mut Vec<UpstreamConfig>,
) -> Result<RouteConfig, Problem> {
    let route_line = field.line;
    let route_path = field.path.clone();
    let mut t = field.table(&[
        "host",
        "site",
        "path",
        "methods",
        "backends",
        "upstream",
        "set_host",
        "max_body_bytes",
        "request_body_timeout",
        "min_body_rate",
        "require_client_cert",
        "allow_subject_cn",
        "allow_san_dns",
        "allow_san_uri",
        "allow_fingerprint_sha256",
        "forward_client_cert",
        "client_cert_headers",
        "set_headers",
        "add_headers",
        "remove_headers",
        "strip_path_prefix",
        "rewrite_path_prefix",
    ])?;
    let host = match t.take("host") {
        None => None,
        Some(f) => Some(parse_host_match(f.string()?).map_err(|why| f.problem(why))?),
    };
    let site = match t.take("site") {
        None => None,
        Some(f) => {
            let name = f.string()?;
            let found = sites.iter().position(|s| s.name == name);
            Some(found.ok_or_else(|| {
                let known: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
                f.problem(format!(
                    "no site is named \"{name}\" (sites: {})",
                    known.join(", ")
                ))
            })?)
        }
    };
    // Requests are matched in normal form, so a route path must be written
    // in it: one that is not could never match what it seems to say.
    let path_field = t.require("path")?;
    let path = path_field.string()?;
    if let Some(why) = route_path_problem(path) {
        return Err(path_field.problem(why));
    }
    let path = path.to_string();
    let methods = match t.take("methods") {
        None => None,
        Some(f) => methods(f)?,
    };
    let upstream =
        match (t.take("backends"), t.take("upstream")) {
            (Some(b), None) => {
                let addresses = b
                    .non_empty_array("a list of \"host:port\" addresses")?
                    .into_iter()
                    .map(|f| addr::resolve_backend_addr(f.string()?).map_err(|why| f.problem(why)))
                    .collect::<Result<Vec<_>, _>>()?;
                upstreams.push(UpstreamConfig {
                    name: format!("route[{index}]"),
                    addresses,
                    tls: None,
                });
                upstreams.len() - 1
            }
            (None, Some(u)) => {
                let name = u.string()?;
                upstreams
                    .iter()
                    .position(|x| x.name == name)
                    .ok_or_else(|| u.problem(format!("no [[upstream]] is named \"{name}\"")))?
            }
            (Some(_), Some(u)) => {
                return Err(u.problem("give either backends or upstream, not both".into()))
            }
            (None, None) => return Err(Problem {
                line: route_line,
                field: format!("{route_path}.backends"),
                problem:
                    "missing (this field is required): a list of backends, or upstream = \"name\""
                        .into(),
            }),
        };
    let mut set_host = match t.take("set_host") {
        None => None,
        Some(f) => Some(host_value(&f)?),
    };
    let max_body_bytes = match t.take("max_body_bytes") {
        None => limits.max_body_bytes,
        Some(f) => f.size()?,
    };
    let body_deadline = BodyDeadline {
        base: match t.take("request_body_timeout") {
            None => timeouts.request_body,
            Some(f) => f.positive_duration()?,
        },
        min_rate: match t.take("min_body_rate") {
            None => limits.min_body_rate,
            Some(f) => f.rate()?,
        },
    };

    let mut client_policy = ClientPolicy::default();
    let mut policy_field: Option<Field> = None;
    if let Some(f) = t.take("require_client_cert") {
        client_policy.require_client_cert = f.boolean()?;
        policy_field = Some(f);
    }
    client_policy.allow = allowlist(&mut t, &mut policy_field)?;

    let forward_identity = match t.take("forward_client_cert") {
        None => {
            if let Some(f) = t.take("client_cert_headers") {
                return Err(f.problem("only with forward_client_cert".into()));
            }
            IdentityForwarding::default()
        }
        Some(f) => {
            let renames = t.take("client_cert_headers");
            let fwd = identity_forwarding(&f, renames)?;
            policy_field.get_or_insert(f);
            fwd
        }
    };

    let mut headers = HeaderRules::default();
    if let Some(f) = t.take("set_headers") {
        for (name, value_field) in f.free_table()?.into_fields() {
            let lower = header_name(&value_field, &name)?;
            if lower == "host" {
                if set_host.is_some() {
                    return Err(value_field.problem("Host is already set by set_host".into()));
                }
                set_host = Some(host_value(&value_field)?);
                continue;
            }
            headers.set.push((name, header_value(&value_field)?));
        }
    }
    if let Some(f) = t.take("add_headers") {
        for (name, value_field) in f.free_table()?.into_fields() {
            let lower = header_name(&value_field, &name)?;
            if lower == "host" {
                return Err(value_field.problem("Host cannot be added (use set_host)".into()));
            }
            headers.add.push((name, header_value(&value_field)?));
        }
    }
    if let Some(f) = t.take("remove_headers") {
        for item in f.non_empty_array("a list of header names")? {
            let name = item.string()?.to_string();
            let lower = header_name(&item, &name)?;
            if lower == "host" {
                return Err(item.problem("Host cannot be removed (use set_host)".into()));
            }
            headers.remove.push(lower);
        }
    }

    let rewrite_prefix = match (t.take("strip_path_prefix"), t.take("rewrite_path_prefix")) {
        (Some(_), Some(r)) => {
            return Err(r.problem("give either strip_path_prefix or rewrite_path_prefix".into()))
        }
        (Some(s), None) => s.boolean()?.then(String::new),
        (None, Some(r)) => {
            let v = r.string()?;
            if let Some(why) = route_path_problem(v) {
                return Err(r.problem(why));
            }
            Some(v.to_string())
        }
        (None, None) => None,
    };

    if let (Some(site), Some(f)) = (site, &policy_field) {
        if sites[site].mtls == MtlsMode::Off {
            return Err(f.problem(format!(
                "site \"{}\" has mtls = \"off\": no client certificate is ever presented there",
                sites[site].name
            )));
        }
    }
    Ok(RouteConfig {
        host,
        site,
        path,
        methods,
        upstream,
        set_host,
        max_body_bytes,
        body_deadline,
        client_policy,
        forward_identity,
        headers,
        rewrite_prefix,
    })
}

/// Lowercased names of every identity header any route could send, plus the
/// defaults: the request path strips all of them from every request.
pub(super) fn identity_header_names(routes: &[RouteConfig]) -> Vec<String> {
    let mut names: Vec<String> = [
        DEFAULT_ESCAPED_PEM,
        DEFAULT_CLIENT_CERT,
        DEFAULT_CLIENT_CERT_CHAIN,
        DEFAULT_XFCC,
        DEFAULT_SUBJECT,
        DEFAULT_FINGERPRINT,
    ]
    .iter()
    .map(|n| n.to_ascii_lowercase())
    .collect();
    for r in routes {
        let f = &r.forward_identity;
        for name in [
            &f.escaped_pem,
            &f.client_cert,
            &f.client_cert_chain,
            &f.xfcc,
            &f.subject,
            &f.fingerprint,
        ]
        .into_iter()
        .flatten()
        {
            let lower = name.to_ascii_lowercase();
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
    }
    names
}

fn allowlist(
    t: &mut super::field::Fields,
    policy_field: &mut Option<Field>,
) -> Result<Allowlist, Problem> {
    let mut allow = Allowlist::default();
    let mut strings =
        |key: &str, policy_field: &mut Option<Field>| -> Result<Vec<String>, Problem> {
            let Some(f) = t.take(key) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in f.clone_array("a list of strings")? {
                let v = item.string()?;
                if v.is_empty() {
                    return Err(item.problem("empty entry".into()));
                }
                out.push(v.to_string());
            }
            policy_field.get_or_insert(f);
            Ok(out)
        };
    allow.subject_cn = strings("allow_subject_cn", policy_field)?;
    allow.san_dns = strings("allow_san_dns", policy_field)?;
    allow.san_uri = strings("allow_san_uri", policy_field)?;
    for (i, v) in strings("allow_fingerprint_sha256", policy_field)?
        .into_iter()
        .enumerate()
    {
        let fp = parse_fingerprint(&v).map_err(|why| Problem {
            line: policy_field.as_ref().map_or(0, |f| f.line),
            field: format!("allow_fingerprint_sha256[{i}]"),
            problem: why,
        })?;
        allow.sha256.push(fp);
    }
    Ok(allow)
}

fn identity_forwarding(
    kinds: &Field,
    renames: Option<Field>,
) -> Result<IdentityForwarding, Problem> {
    let mut fwd = IdentityForwarding::default();
    for item in kinds.clone_array("a list such as [\"xfcc\", \"rfc9440\"]")? {
        match item.choice(&["escaped_pem", "rfc9440", "xfcc", "subject", "fingerprint"])? {
            "escaped_pem" => fwd.escaped_pem = Some(DEFAULT_ESCAPED_PEM.into()),
            "rfc9440" => {
                fwd.client_cert = Some(DEFAULT_CLIENT_CERT.into());
                fwd.client_cert_chain = Some(DEFAULT_CLIENT_CERT_CHAIN.into());
            }
            "xfcc" => fwd.xfcc = Some(DEFAULT_XFCC.into()),
            "subject" => fwd.subject = Some(DEFAULT_SUBJECT.into()),
            _ => fwd.fingerprint = Some(DEFAULT_FINGERPRINT.into()),
        }
    }
    let Some(renames) = renames else {
        return Ok(fwd);
    };
    const KEYS: [&str; 6] = [
        "escaped_pem",
        "client_cert",
        "client_cert_chain",
        "xfcc",
        "subject",
        "fingerprint",
    ];
    let mut t = renames.table(&KEYS)?;
    for key in KEYS {
        let Some(f) = t.take(key) else { continue };
        let name = f.string()?.to_string();
        let lower = identity_header_name(&f, &name)?;
        if lower == "host" {
            return Err(f.problem("not Host".into()));
        }
        let slot = match key {
            "escaped_pem" => &mut fwd.escaped_pem,
            "client_cert" => &mut fwd.client_cert,
            "client_cert_chain" => &mut fwd.client_cert_chain,
            "xfcc" => &mut fwd.xfcc,
            "subject" => &mut fwd.subject,
            _ => &mut fwd.fingerprint,
        };
        if slot.is_none() {
            return Err(f.problem(format!(
                "renames a header that forward_client_cert does not send (add \"{}\" there)",
                match key {
                    "client_cert" | "client_cert_chain" => "rfc9440",
                    k => k,
                }
            )));
        }
        *slot = Some(name);
    }
    Ok(fwd)
}

/// A header name as a rule may use it; returns it lowercased.
fn header_name(f: &Field, name: &str) -> Result<String, Problem> {
    let lower = identity_header_name(f, name)?;
    if IDENTITY_DEFAULTS.iter().any(|r| same_field_name(&lower, r)) {
        return Err(f.problem(format!(
            "\"{name}\" is an identity header: only forward_client_cert writes it (from the verified certificate)"
        )));
    }
    Ok(lower)
}

/// A header name an identity header may be renamed to; returns it lowercased.
fn identity_header_name(f: &Field, name: &str) -> Result<String, Problem> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(f.problem(format!("\"{name}\" is not a header name")));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.iter().any(|r| same_field_name(&lower, r)) {
        return Err(f.problem(format!(
            "\"{name}\" is managed by the gateway itself and cannot be changed by a rule"
        )));
    }
    Ok(lower)
}

fn header_value(f: &Field) -> Result<String, Problem> {
    let v = f.string()?;
    if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(f.problem("a header value cannot contain control characters".into()));
    }
    Ok(v.trim().to_string())
}

fn host_value(f: &Field) -> Result<String, Problem> {
    let value = f.string()?;
    let valid = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        });
    if !valid {
        return Err(f.problem(format!("\"{value}\" is not a valid Host header value")));
    }
    Ok(value.to_string())
}
