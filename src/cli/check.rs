//! `portcullis check`: validate a config as the gateway would load it, and
//! explain it.

use super::*;

pub(super) fn cmd_check(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config"])?;
    let path = flags.required("--config")?;
    if let config::NodeConfig::Cluster(b) =
        config::load_node(Path::new(path)).map_err(|e| Failure::Config(e.to_string()))?
    {
        // A node's bootstrap file: the shared config is checked by `config push`.
        crate::cluster::etcd::Client::new(&b.cluster).map_err(Failure::Config)?;
        let endpoints: Vec<String> = b
            .cluster
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("{path}: valid (a cluster node's bootstrap file)");
        println!(
            "  etcd {} ({}), prefix {}, snapshot {}",
            endpoints.join(", "),
            if b.cluster.tls.is_some() {
                "TLS"
            } else {
                "plain, no TLS"
            },
            b.cluster.prefix,
            b.cluster.snapshot.display()
        );
        println!("  routes, sites and certificates come from etcd: check them with `portcullis config diff --cluster {path} FILE`");
        return Ok(());
    }
    let cfg = load_and_validate(Path::new(path))?;
    println!("{path}: valid");
    explain(&cfg);
    Ok(())
}

/// Parses the config and loads everything it names (certificates, keys,
/// PKCS#12 files, CA bundles, CRLs) exactly as the gateway would.
pub(super) fn load_and_validate(path: &Path) -> Result<Config, Failure> {
    let cfg = config::load(path).map_err(|e| Failure::Config(e.to_string()))?;
    let published = crate::metrics::Published::new(1);
    crate::generation::Generation::load(&cfg, 1, &published).map_err(Failure::Config)?;
    Ok(cfg)
}

fn explain(cfg: &Config) {
    let workers = match cfg.server.workers {
        config::Workers::Auto => format!("auto ({} on this host)", runtime::available_cores()),
        config::Workers::Count(n) => n.to_string(),
    };
    println!("  workers: {workers}");
    let site_name = |i: usize| cfg.sites.get(i).map_or("?", |s| s.name.as_str());
    for l in &cfg.listeners {
        let sites: Vec<&str> = l.sites.iter().map(|&i| site_name(i)).collect();
        let default = l
            .default_site
            .map_or("none: unknown server names are refused".to_string(), |i| {
                site_name(i).to_string()
            });
        println!(
            "  listener {}: sites {} (default {default})",
            l.address,
            sites.join(", ")
        );
        if !l.trusted_proxies.is_empty() {
            let nets: Vec<String> = l
                .trusted_proxies
                .networks()
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "    trusted proxies {}: their X-Forwarded-For is kept{}",
                nets.join(" "),
                if l.proxy_protocol {
                    "; a PROXY header (v1 or v2) from one of them is required"
                } else {
                    ""
                }
            );
        }
    }
    for s in &cfg.sites {
        let versions = match (s.tls_versions.tls12, s.tls_versions.tls13) {
            (true, true) => "TLS 1.2 + 1.3",
            (false, true) => "TLS 1.3 only",
            (true, false) => "TLS 1.2 only",
            (false, false) => "no TLS version",
        };
        let names: Vec<String> = s.server_names.iter().map(|m| m.to_string()).collect();
        let mtls = match s.mtls {
            config::MtlsMode::Mandatory => "client certificate required",
            config::MtlsMode::Optional => "client certificate optional (routes decide)",
            config::MtlsMode::Off => "no client certificate",
        };
        println!(
            "  site {}: {}, {versions}, {mtls}, {} client CA bundle(s), {} CRL file(s)",
            s.name,
            if names.is_empty() {
                "any name".to_string()
            } else {
                names.join(" ")
            },
            s.client_ca.len(),
            s.crls.len()
        );
    }
    for u in cfg.upstreams.iter().filter(|u| u.tls.is_some()) {
        if let Some(t) = &u.tls {
            println!(
                "  upstream {}: TLS to {}, verifying {}, {}",
                u.name,
                t.server_name,
                if t.verify_hostname {
                    "chain and host name"
                } else {
                    "chain only (host name NOT verified)"
                },
                if t.client_identity.is_some() {
                    "presenting a client certificate"
                } else {
                    "no client certificate"
                }
            );
        }
    }
    for r in &cfg.routes {
        let host = r
            .host
            .as_ref()
            .map(|h| format!("{h:?}"))
            .unwrap_or_else(|| "any host".into());
        let site = r
            .site
            .map(|i| format!(" on site {}", site_name(i)))
            .unwrap_or_default();
        let methods = r
            .methods
            .as_ref()
            .map(|m| m.join(","))
            .unwrap_or_else(|| "any method".into());
        let upstream = cfg.upstreams.get(r.upstream);
        let backends: Vec<String> = upstream
            .map(|u| u.addresses.iter().map(|b| b.to_string()).collect())
            .unwrap_or_default();
        let tls = if upstream.is_some_and(|u| u.tls.is_some()) {
            " (TLS)"
        } else {
            ""
        };
        // Segment-boundary prefixes: "/api" covers "/api" and "/api/...".
        let below = r.path.strip_suffix('/').unwrap_or(&r.path);
        println!(
            "  route {host}{site} {below}/** ({methods}) -> {}{tls}",
            backends.join(", ")
        );
    }
    let slashes = match cfg.paths.escaped_slashes {
        config::EscapedSlashes::Reject => "%2F refused (400)",
        config::EscapedSlashes::Keep => {
            "%2F forwarded as data (UNSAFE with backends that decode it)"
        }
        config::EscapedSlashes::Decode => "%2F decoded into /",
    };
    let merge = if cfg.paths.merge_slashes {
        "// merged"
    } else {
        "// kept (UNSAFE with backends that merge them)"
    };
    println!("  paths: normalised before routing; {slashes}; {merge}");
    match cfg.tls.verified_chain_cache {
        0 => println!("  tls: verified-chain cache off (every client chain built in full)"),
        n => println!(
            "  tls: verified-chain cache {n} entries per worker (a returning client's chain is not built again; its CertificateVerify always is checked)"
        ),
    }
}
