//! `[[site]]` and `[[upstream]]` tables: TLS identities the gateway serves,
//! and the backends it speaks to (plain, TLS or mTLS).

use super::field::{Field, Fields, Problem};
use super::names::parse_host_match;
use super::{
    addr, AppProtocol, CrlUrl, HostMatch, IdentitySource, MtlsMode, PasswordSource, SiteConfig,
    TlsVersions, UpstreamConfig, UpstreamTls,
};
use std::path::Path;

/// The sites in file order, and the one marked `default = true` (at most one).
pub(super) fn sites(
    tables: Vec<Field>,
    base_dir: &Path,
    has_state_dir: bool,
) -> Result<(Vec<SiteConfig>, Option<usize>), Problem> {
    let mut sites: Vec<SiteConfig> = Vec::with_capacity(tables.len());
    let mut default_line: Option<usize> = None;
    let mut defaults = Vec::new();
    for table in tables {
        let line = table.line;
        let (site, is_default) = site(table, base_dir, &sites, has_state_dir)?;
        if is_default {
            if let Some(first) = default_line {
                return Err(Problem {
                    line,
                    field: format!("site[{}].default", sites.len()),
                    problem: format!(
                        "only one site can be the default (the site on line {first} already is)"
                    ),
                });
            }
            default_line = Some(line);
            defaults.push(sites.len());
        }
        sites.push(site);
    }
    Ok((sites, defaults.first().copied()))
}

fn site(
    field: Field,
    base_dir: &Path,
    earlier: &[SiteConfig],
    has_state_dir: bool,
) -> Result<(SiteConfig, bool), Problem> {
    let known = [
        &[
            "name",
            "server_names",
            "client_ca",
            "mtls",
            "crl",
            "crl_urls",
            "tls_versions",
            "default",
            "alpn",
        ][..],
        &IDENTITY_FIELDS,
        &OCSP_FIELDS,
    ]
    .concat();
    let mut t = field.table(&known)?;
    let name_field = t.require("name")?;
    let name = name_field.string()?.to_string();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(name_field.problem(format!(
            "\"{name}\" is not a site name (letters, digits, '-', '_', '.')"
        )));
    }
    if earlier.iter().any(|s| s.name == name) {
        return Err(name_field.problem(format!("another site is already named \"{name}\"")));
    }
    let mut server_names = Vec::new();
    for item in t
        .require("server_names")?
        .non_empty_array("a list of host names such as [\"api.example.com\"]")?
    {
        let m = parse_host_match(item.string()?).map_err(|why| item.problem(why))?;
        if let Some(other) = earlier.iter().find(|s| s.server_names.contains(&m)) {
            return Err(item.problem(format!("already a server name of site \"{}\"", other.name)));
        }
        server_names.push(m);
    }
    let identity = identity_source(&mut t, base_dir)?;
    let mtls = match t.take("mtls") {
        None => MtlsMode::Mandatory,
        Some(f) => match f.choice(&["mandatory", "optional", "off"])? {
            "optional" => MtlsMode::Optional,
            "off" => MtlsMode::Off,
            _ => MtlsMode::Mandatory,
        },
    };
    let client_ca = match t.take("client_ca") {
        Some(f) => f.readable_files(base_dir, "a list of CA bundle files")?,
        None if mtls == MtlsMode::Off => Vec::new(),
        None => {
            return Err(Problem {
                line: t.line,
                field: t.child_path("client_ca"),
                problem: "missing: required unless mtls = \"off\"".to_string(),
            })
        }
    };
    let crls = match t.take("crl") {
        None => Vec::new(),
        Some(f) => {
            if mtls == MtlsMode::Off {
                return Err(f.problem("a CRL needs client certificates (mtls is \"off\")".into()));
            }
            f.readable_files(base_dir, "a list of CRL files (PEM or DER)")?
        }
    };
    let mut crl_urls: Vec<CrlUrl> = Vec::new();
    if let Some(f) = t.take("crl_urls") {
        if mtls == MtlsMode::Off {
            return Err(f.problem("a CRL needs client certificates (mtls is \"off\")".into()));
        }
        if !has_state_dir {
            return Err(f.problem(
                "needs [state] dir: the last good copy of each fetched CRL is kept there (e.g. dir = \"/var/lib/portcullis\")".into(),
            ));
        }
        for item in f.non_empty_array("a list of http:// URLs of CRLs")? {
            let url = CrlUrl::parse(item.string()?).map_err(|why| item.problem(why))?;
            if crl_urls.contains(&url) {
                return Err(item.problem(format!("\"{}\" is listed twice", url.text)));
            }
            crl_urls.push(url);
        }
    }
    let tls_versions = match t.take("tls_versions") {
        None => TlsVersions::default(),
        Some(f) => tls_versions(f)?,
    };
    let alpn = match t.take("alpn") {
        None => AppProtocol::default_alpn(),
        Some(f) => alpn(f)?,
    };
    let is_default = match t.take("default") {
        None => false,
        Some(f) => f.boolean()?,
    };
    let ocsp = ocsp_stapling(&mut t)?;
    Ok((
        SiteConfig {
            name,
            server_names,
            identity,
            client_ca,
            mtls,
            crls,
            crl_urls,
            tls_versions,
            alpn,
            ocsp,
        },
        is_default,
    ))
}

/// `alpn = ["h2", "http/1.1"]`: the protocols offered, in order of preference.
pub(super) fn alpn(field: Field) -> Result<Vec<AppProtocol>, Problem> {
    let mut out = Vec::new();
    for item in field.non_empty_array("a list of protocols such as [\"h2\", \"http/1.1\"]")? {
        let p = match item.choice(&["h2", "http/1.1"])? {
            "h2" => AppProtocol::Http2,
            _ => AppProtocol::Http11,
        };
        if out.contains(&p) {
            return Err(item.problem(format!("\"{}\" is listed twice", item.string()?)));
        }
        out.push(p);
    }
    Ok(out)
}

/// The OCSP stapling fields of a site or of a listener with its own certificate.
pub(super) const OCSP_FIELDS: [&str; 3] = ["ocsp_stapling", "ocsp_url", "ocsp_refresh"];

/// The longest wait between two fetches of a staple, unless set: a
/// response usually lives for days, and an hourly fetch notices a
/// revocation within the hour.
pub const DEFAULT_OCSP_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

/// `ocsp_stapling = "off" | "on"` (default "off"), `ocsp_url` (default: the
/// certificate's Authority Information Access responder) and
/// `ocsp_refresh` (default 1h). Off by default: stapling makes the gateway
/// open outbound connections to a responder, which an edge node's firewall
/// may not expect, and a client that checks OCSP itself loses nothing.
/// The URL and refresh without stapling on are refused rather than ignored.
pub(super) fn ocsp_stapling(t: &mut Fields) -> Result<Option<crate::ocsp::Want>, Problem> {
    let on = match t.take("ocsp_stapling") {
        None => false,
        Some(f) => f.choice(&["off", "on"])? == "on",
    };
    let url = t.take("ocsp_url");
    let refresh = t.take("ocsp_refresh");
    if !on {
        if let Some(f) = url.or(refresh) {
            return Err(f.problem("only with ocsp_stapling = \"on\"".to_string()));
        }
        return Ok(None);
    }
    let url = match url {
        None => None,
        Some(f) => Some(crate::ocsp::url::parse(f.string()?).map_err(|why| f.problem(why))?),
    };
    let refresh = match refresh {
        None => DEFAULT_OCSP_REFRESH,
        Some(f) => {
            let d = f.duration()?;
            if d < std::time::Duration::from_secs(1) {
                return Err(f.problem("at least 1s".to_string()));
            }
            d
        }
    };
    Ok(Some(crate::ocsp::Want { url, refresh }))
}

/// The fields a TLS identity is written with, wherever one is configured.
pub(super) const IDENTITY_FIELDS: [&str; 6] = [
    "certificate",
    "private_key",
    "pkcs12",
    "pkcs12_password",
    "pkcs12_password_env",
    "pkcs12_password_file",
];

/// `certificate` + `private_key` (PEM), or `pkcs12` with exactly one of
/// `pkcs12_password`, `pkcs12_password_env`, `pkcs12_password_file`.
pub(super) fn identity_source(t: &mut Fields, base_dir: &Path) -> Result<IdentitySource, Problem> {
    match (t.take("certificate"), t.take("pkcs12")) {
        (Some(cert), None) => {
            let certificate = cert.readable_file(base_dir)?;
            let private_key = t.require("private_key")?.readable_file(base_dir)?;
            for key in [
                "pkcs12_password",
                "pkcs12_password_env",
                "pkcs12_password_file",
            ] {
                if let Some(f) = t.take(key) {
                    return Err(f.problem("only with pkcs12".to_string()));
                }
            }
            Ok(IdentitySource::Pem {
                certificate,
                private_key,
            })
        }
        (None, Some(p12)) => {
            let path = p12.readable_file(base_dir)?;
            if let Some(f) = t.take("private_key") {
                return Err(f.problem("not with pkcs12: the key is inside the PKCS#12 file".into()));
            }
            let mut sources = Vec::new();
            if let Some(f) = t.take("pkcs12_password") {
                sources.push((PasswordSource::Literal(f.string()?.to_string()), f));
            }
            if let Some(f) = t.take("pkcs12_password_env") {
                let var = f.string()?.to_string();
                if var.is_empty() {
                    return Err(f.problem("empty variable name".into()));
                }
                sources.push((PasswordSource::Env(var), f));
            }
            if let Some(f) = t.take("pkcs12_password_file") {
                sources.push((PasswordSource::File(f.readable_file(base_dir)?), f));
            }
            match sources.len() {
                0 => Err(Problem {
                    line: p12.line,
                    field: p12.path.clone(),
                    problem: "needs a password: pkcs12_password, pkcs12_password_env or pkcs12_password_file".into(),
                }),
                1 => {
                    let (password, _) = sources.remove(0);
                    Ok(IdentitySource::Pkcs12 { path, password })
                }
                _ => Err(sources[1].1.problem("give only one of pkcs12_password, pkcs12_password_env, pkcs12_password_file".into())),
            }
        }
        (Some(_), Some(p12)) => {
            Err(p12.problem("give either certificate + private_key or pkcs12, not both".into()))
        }
        (None, None) => Err(Problem {
            line: t.line,
            field: t.child_path("certificate"),
            problem: "missing: certificate + private_key (PEM) or pkcs12".into(),
        }),
    }
}

pub(super) fn tls_versions(f: Field) -> Result<TlsVersions, Problem> {
    let mut versions = TlsVersions {
        tls12: false,
        tls13: false,
    };
    for item in f.non_empty_array("a list such as [\"1.2\", \"1.3\"]")? {
        match item.choice(&["1.2", "1.3"])? {
            "1.2" => versions.tls12 = true,
            _ => versions.tls13 = true,
        }
    }
    Ok(versions)
}

pub(super) fn upstreams(
    tables: Vec<Field>,
    base_dir: &Path,
) -> Result<Vec<UpstreamConfig>, Problem> {
    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(tables.len());
    for table in tables {
        let built = upstream(table, base_dir, &upstreams)?;
        upstreams.push(built);
    }
    Ok(upstreams)
}

fn upstream(
    field: Field,
    base_dir: &Path,
    earlier: &[UpstreamConfig],
) -> Result<UpstreamConfig, Problem> {
    let known = [
        &[
            "name",
            "addresses",
            "tls",
            "ca",
            "server_name",
            "insecure_skip_verify_hostname",
        ][..],
        &IDENTITY_FIELDS,
    ]
    .concat();
    let mut t = field.table(&known)?;
    let name_field = t.require("name")?;
    let name = name_field.string()?.to_string();
    if name.is_empty() || name.starts_with("route[") {
        return Err(name_field.problem(format!("\"{name}\" is not a usable upstream name")));
    }
    if earlier.iter().any(|u| u.name == name) {
        return Err(name_field.problem(format!("another upstream is already named \"{name}\"")));
    }
    let mut written_hosts = Vec::new();
    let mut addresses = Vec::new();
    for item in t
        .require("addresses")?
        .non_empty_array("a list of \"host:port\" addresses")?
    {
        let written = item.string()?;
        addresses.push(addr::resolve_backend_addr(written).map_err(|why| item.problem(why))?);
        written_hosts.push(host_part(written).to_string());
    }
    let tls_on = match t.take("tls") {
        None => false,
        Some(f) => f.boolean()?,
    };
    if !tls_on {
        if let Some((key, line)) = t.first_key() {
            return Err(Problem {
                line,
                field: t.child_path(&key),
                problem: "only with tls = true".to_string(),
            });
        }
        return Ok(UpstreamConfig {
            name,
            addresses,
            tls: None,
        });
    }
    let ca = t.require("ca")?.readable_files(
        base_dir,
        "a list of CA bundle files the backend's certificate chains to",
    )?;
    let server_name = match t.take("server_name") {
        Some(f) => {
            // The normal form every host value is kept in ("App.Internal."
            // is "app.internal").
            match parse_host_match(f.string()?).map_err(|why| f.problem(why))? {
                HostMatch::Exact(name) => name,
                HostMatch::WildcardSuffix(_) => {
                    return Err(f.problem("a server name to verify cannot be a wildcard".into()))
                }
            }
        }
        None => {
            // The name written in the first address is what an operator means
            // by default; differing names need an explicit server_name.
            let first = written_hosts[0].clone();
            if written_hosts.iter().any(|h| *h != first) {
                return Err(Problem {
                    line: t.line,
                    field: t.child_path("server_name"),
                    problem: "missing: the addresses name different hosts, so say which name the backends' certificates carry".into(),
                });
            }
            first
        }
    };
    let verify_hostname = match t.take("insecure_skip_verify_hostname") {
        None => true,
        Some(f) => !f.boolean()?,
    };
    let client_identity = if t.has("certificate") || t.has("pkcs12") {
        Some(identity_source(&mut t, base_dir)?)
    } else {
        if let Some(f) = t.take("private_key") {
            return Err(f.problem("needs certificate".into()));
        }
        None
    };
    Ok(UpstreamConfig {
        name,
        addresses,
        tls: Some(UpstreamTls {
            ca,
            server_name,
            verify_hostname,
            client_identity,
        }),
    })
}

/// "app.internal:9443" -> "app.internal"; "[::1]:9443" -> "::1".
fn host_part(written: &str) -> &str {
    if let Some(rest) = written.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    written.rsplit_once(':').map_or(written, |(h, _)| h)
}
