//! Command line: `run`, `echo`, `certs`, `check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::certs::{self, CrlOptions, InitOptions, KeyType, LeafKind, LeafOptions};
use crate::config::{self, Config, DriverChoice, LogFormat};
use crate::{echo, gateway, logging, runtime};

const USAGE: &str = "\
portcullis: thread-per-core mTLS API gateway

USAGE:
  portcullis run [--config FILE] [--listen ADDR]...
      With no --config: generate dev certificates once (in $PORTCULLIS_HOME/dev,
      default ~/.local/share/portcullis/dev), start the built-in echo backend,
      listen on 127.0.0.1:8443 and [::1]:8443 (or each --listen), and print a
      curl command that works.
  portcullis echo --listen ADDR [--workers N] [--tls-cert PEM --tls-key PEM [--client-ca PEM]]
      The built-in echo backend (plain HTTP/1.1; over TLS with --tls-cert, demanding a
      client certificate from --client-ca when given).
  portcullis certs init --out DIR [--server-name NAME]... [--client-cn CN]
      [--key-type ecdsa-p256|ecdsa-p384|rsa-2048|ed25519] [--p12-password PW] [--days N] [--force]
      A dev CA, a server certificate and a client certificate (PEM, plus a .p12 of each).
  portcullis certs issue --ca-dir DIR --out DIR --stem NAME --cn CN [--server] [--dns NAME]...
      [--uri URI]... [--expired] [--key-type T] [--p12-password PW] [--days N]
      One more certificate signed by the CA in --ca-dir (client unless --server), as
      NAME.pem, NAME.key and NAME.p12. --uri adds a URI SAN, e.g. a SPIFFE ID.
  portcullis certs crl --ca-dir DIR --out FILE [--revoke CERT.pem]... [--days N]
      A PEM CRL signed by the CA in --ca-dir, revoking each --revoke certificate
      (none: an empty CRL). Valid for N days (default 30).
  portcullis check --config FILE
      Validate a config file (certificates, keys, CRLs included) and explain what it will do.
  portcullis reload --config FILE [--pid PID]
      Validate FILE, then ask the running gateway (server.pid_file, or --pid) to reload
      it (SIGHUP): new connections get the new config, open ones finish on theirs.
  portcullis doctor [--config FILE]
      Check this host (io_uring, kernel TLS, limits, somaxconn, cores) and say how to fix what is missing.

ENVIRONMENT:
  PORTCULLIS_DRIVER=io_uring|epoll|auto   overrides server.driver
  PORTCULLIS_LOG=<filter>                 overrides server.log_level (e.g. debug)
";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        "run" => cmd_run(rest),
        "echo" => cmd_echo(rest),
        "certs" => cmd_certs(rest),
        "check" => cmd_check(rest),
        "reload" => cmd_reload(rest),
        "doctor" => {
            let flags = match Flags::parse(rest, &[], &["--config"]) {
                Ok(f) => f,
                Err(e) => return report(Err(e)),
            };
            return if crate::doctor::run(flags.one("--config").map(Path::new)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" | "version" => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    report(result)
}

fn report(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("portcullis: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Config(msg)) => {
            eprintln!("portcullis: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("portcullis: {msg}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Config(String),
    Runtime(String),
}

/// Minimal flag parser: `--name value` pairs, repeatable, plus boolean flags.
struct Flags {
    pairs: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Flags {
    fn parse(args: &[String], switches: &[&str], valued: &[&str]) -> Result<Flags, Failure> {
        let mut flags = Flags {
            pairs: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            if switches.contains(&name) && inline.is_none() {
                flags.switches.push(name.to_string());
            } else if valued.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Failure::Usage(format!("{name} needs a value")))?,
                };
                flags.pairs.push((name.to_string(), v));
            } else {
                return Err(Failure::Usage(format!("unexpected argument {a:?}")));
            }
        }
        Ok(flags)
    }
    fn one(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
    fn required(&self, name: &str) -> Result<&str, Failure> {
        self.one(name)
            .ok_or_else(|| Failure::Usage(format!("{name} is required")))
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, Failure> {
    s.parse().map_err(|_| {
        Failure::Usage(format!(
            "{s:?} is not a socket address (like 127.0.0.1:8443 or [::1]:8443)"
        ))
    })
}

fn cmd_run(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config", "--listen"])?;
    let listen: Vec<SocketAddr> = flags
        .all("--listen")
        .iter()
        .map(|s| parse_addr(s))
        .collect::<Result<_, _>>()?;
    let config = match flags.one("--config") {
        Some(path) => {
            let cfg = config::load(Path::new(path)).map_err(|e| Failure::Config(e.to_string()))?;
            logging::init(cfg.server.log_format, &cfg.server.log_level);
            cfg
        }
        None => {
            logging::init(LogFormat::Text, "info");
            dev_default(listen)?
        }
    };
    let prepared = gateway::prepare(config).map_err(Failure::Runtime)?;
    gateway::run(prepared).map_err(Failure::Runtime)
}

/// `portcullis run` with no config: dev certificates, built-in echo backend,
/// a generated config (written next to the certificates for the curious).
fn dev_default(listen: Vec<SocketAddr>) -> Result<Config, Failure> {
    let home = match std::env::var_os("PORTCULLIS_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            let base = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            base.join(".local/share/portcullis")
        }
    };
    let dir = home.join("dev");
    let dir = std::fs::create_dir_all(&dir)
        .and_then(|_| dir.canonicalize())
        .map_err(|e| {
            Failure::Runtime(format!(
                "{}: cannot create the dev directory: {e}",
                dir.display()
            ))
        })?;
    let opts = InitOptions {
        out_dir: dir.clone(),
        server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        client_cn: "portcullis-dev-client".into(),
        key_type: KeyType::EcdsaP256,
        p12_password: "portcullis".into(),
        days: 825,
        force: false,
    };
    let generated = certs::init(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
    if generated {
        eprintln!(
            "portcullis: generated a dev CA, server and client certificate in {}",
            dir.display()
        );
    } else {
        eprintln!(
            "portcullis: using the dev certificates in {}",
            dir.display()
        );
    }

    let driver = runtime::select_driver(
        runtime::driver_choice_from_env(DriverChoice::Auto).map_err(Failure::Config)?,
    )
    .map_err(Failure::Runtime)?;
    let (echo_addrs, _echo_threads) = echo::start(
        &["127.0.0.1:0"
            .parse()
            .map_err(|_| Failure::Runtime("bad echo address".into()))?],
        1,
        driver,
        None,
    )
    .map_err(Failure::Runtime)?;
    let echo_addr = echo_addrs
        .first()
        .copied()
        .ok_or_else(|| Failure::Runtime("echo backend did not bind".into()))?;

    let mut listen = listen;
    let explicit = !listen.is_empty();
    if !explicit {
        listen.push(
            "127.0.0.1:8443"
                .parse()
                .map_err(|_| Failure::Runtime("bad default address".into()))?,
        );
        // IPv6 loopback only where the host has it configured.
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            listen.push(
                "[::1]:8443"
                    .parse()
                    .map_err(|_| Failure::Runtime("bad default address".into()))?,
            );
        }
    }
    let mut toml = String::from("# Generated by `portcullis run` (dev default). Copy and edit it, then: portcullis run --config FILE\n");
    toml.push_str("[server]\nworkers = \"auto\"\npid_file = \"portcullis.pid\"\n\n");
    for addr in &listen {
        toml.push_str(&format!(
            "[[listener]]\naddress = \"{addr}\"\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\nclient_ca = [\"ca.pem\"]\n\n"
        ));
    }
    toml.push_str(&format!(
        "[[route]]\npath = \"/\"\nbackends = [\"{echo_addr}\"]\n"
    ));
    let config_path = dir.join("portcullis.toml");
    std::fs::write(&config_path, &toml)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", config_path.display())))?;
    let cfg = config::parse(&config_path, &toml).map_err(|e| Failure::Config(e.to_string()))?;

    let port = listen.first().map(|a| a.port()).unwrap_or(8443);
    println!(
        "Portcullis is starting with the dev default (config: {}).",
        config_path.display()
    );
    println!("Try it:");
    println!(
        "curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client.key https://localhost:{port}/hello",
        d = dir.display()
    );
    println!(
        "PKCS#12 client identity: {}/client.p12 (password: portcullis)",
        dir.display()
    );
    Ok(cfg)
}

fn cmd_echo(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(
        args,
        &[],
        &[
            "--listen",
            "--workers",
            "--tls-cert",
            "--tls-key",
            "--client-ca",
        ],
    )?;
    let addrs: Vec<SocketAddr> = flags
        .all("--listen")
        .iter()
        .map(|s| parse_addr(s))
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(Failure::Usage("echo needs --listen ADDR".into()));
    }
    let workers =
        match flags.one("--workers") {
            Some(w) => w.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Failure::Usage(format!("--workers {w:?}: expected a number >= 1"))
            })?,
            None => runtime::available_cores(),
        };
    logging::init(LogFormat::Text, "info");
    let driver = runtime::select_driver(
        runtime::driver_choice_from_env(DriverChoice::Auto).map_err(Failure::Config)?,
    )
    .map_err(Failure::Runtime)?;
    runtime::install_signal_handlers(|| {}).map_err(|e| Failure::Runtime(e.to_string()))?;
    let tls = echo_tls(&flags)?;
    let (_, handles) = echo::start(&addrs, workers, driver, tls).map_err(Failure::Runtime)?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// `echo --tls-cert F --tls-key F [--client-ca F]`: serve TLS, demanding a
/// client certificate from that CA when --client-ca is given.
fn echo_tls(flags: &Flags) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, Failure> {
    let (cert, key) = match (flags.one("--tls-cert"), flags.one("--tls-key")) {
        (None, None) => {
            if flags.one("--client-ca").is_some() {
                return Err(Failure::Usage(
                    "--client-ca needs --tls-cert and --tls-key".into(),
                ));
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(Failure::Usage(
                "--tls-cert and --tls-key go together".into(),
            ))
        }
    };
    let identity = crate::tls::material::load_identity(&config::IdentitySource::Pem {
        certificate: PathBuf::from(cert),
        private_key: PathBuf::from(key),
    })
    .map_err(|e| Failure::Config(e.to_string()))?;
    let (client_roots, mtls) = match flags.one("--client-ca") {
        Some(ca) => (
            crate::tls::material::load_ca_bundle(&[PathBuf::from(ca)])
                .map_err(|e| Failure::Config(e.to_string()))?,
            config::MtlsMode::Mandatory,
        ),
        None => (Vec::new(), config::MtlsMode::Off),
    };
    let site = crate::tls::server_config::SiteTls {
        name: "echo".into(),
        chain: identity.chain,
        key: identity.key,
        client_roots,
        crls: Vec::new(),
        mtls,
        versions: config::TlsVersions::default(),
    };
    let ticketer =
        crate::tls::server_config::site_ticketer().map_err(|e| Failure::Runtime(e.to_string()))?;
    crate::tls::server_config::build(&site, ticketer)
        .map(Some)
        .map_err(Failure::Config)
}

fn cmd_certs(args: &[String]) -> Result<(), Failure> {
    let (sub, rest) = args
        .split_first()
        .ok_or_else(|| Failure::Usage("certs needs `init`, `issue` or `crl`".into()))?;
    let key_type = |flags: &Flags| -> Result<KeyType, Failure> {
        flags
            .one("--key-type")
            .unwrap_or("ecdsa-p256")
            .parse()
            .map_err(|e| Failure::Usage(format!("--key-type: {e}")))
    };
    let days_or = |flags: &Flags, default: u32| -> Result<u32, Failure> {
        match flags.one("--days") {
            Some(d) => d
                .parse()
                .map_err(|_| Failure::Usage(format!("--days {d:?}: expected a number"))),
            None => Ok(default),
        }
    };
    let days = |flags: &Flags| days_or(flags, 825);
    match sub.as_str() {
        "init" => {
            let flags = Flags::parse(
                rest,
                &["--force"],
                &[
                    "--out",
                    "--server-name",
                    "--client-cn",
                    "--key-type",
                    "--p12-password",
                    "--days",
                ],
            )?;
            let mut names = flags.all("--server-name");
            if names.is_empty() {
                names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            }
            let opts = InitOptions {
                out_dir: PathBuf::from(flags.required("--out")?),
                server_names: names,
                client_cn: flags
                    .one("--client-cn")
                    .unwrap_or("portcullis-dev-client")
                    .to_string(),
                key_type: key_type(&flags)?,
                p12_password: flags
                    .one("--p12-password")
                    .unwrap_or("portcullis")
                    .to_string(),
                days: days(&flags)?,
                force: flags.has("--force"),
            };
            let generated = certs::init(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            let dir = opts.out_dir.display();
            if generated {
                println!("wrote {dir}/{{ca.pem,ca.key,server.pem,server.key,server.p12,client.pem,client.key,client.p12}}");
            } else {
                println!("{dir} already holds a CA and certificates; left them as they are (--force to replace)");
            }
            Ok(())
        }
        "issue" => {
            let flags = Flags::parse(
                rest,
                &["--server", "--expired"],
                &[
                    "--ca-dir",
                    "--out",
                    "--stem",
                    "--cn",
                    "--dns",
                    "--uri",
                    "--key-type",
                    "--p12-password",
                    "--days",
                ],
            )?;
            let opts = LeafOptions {
                ca_dir: PathBuf::from(flags.required("--ca-dir")?),
                out_dir: PathBuf::from(flags.required("--out")?),
                stem: flags.required("--stem")?.to_string(),
                common_name: flags.required("--cn")?.to_string(),
                dns_names: flags.all("--dns"),
                uris: flags.all("--uri"),
                key_type: key_type(&flags)?,
                p12_password: flags
                    .one("--p12-password")
                    .unwrap_or("portcullis")
                    .to_string(),
                days: days(&flags)?,
                expired: flags.has("--expired"),
                kind: if flags.has("--server") {
                    LeafKind::Server
                } else {
                    LeafKind::Client
                },
            };
            certs::issue(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "wrote {}/{stem}.pem, {stem}.key and {stem}.p12",
                opts.out_dir.display(),
                stem = opts.stem
            );
            Ok(())
        }
        "crl" => {
            let flags = Flags::parse(rest, &[], &["--ca-dir", "--out", "--revoke", "--days"])?;
            let opts = CrlOptions {
                ca_dir: PathBuf::from(flags.required("--ca-dir")?),
                out: PathBuf::from(flags.required("--out")?),
                revoke: flags
                    .all("--revoke")
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                days: days_or(&flags, certs::DEFAULT_CRL_DAYS)?,
            };
            let revoked = certs::write_crl(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "wrote {} revoking {revoked} certificate{}",
                opts.out.display(),
                if revoked == 1 { "" } else { "s" }
            );
            Ok(())
        }
        other => Err(Failure::Usage(format!("unknown certs command {other:?}"))),
    }
}

fn cmd_check(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config"])?;
    let path = flags.required("--config")?;
    let cfg = load_and_validate(Path::new(path))?;
    println!("{path}: valid");
    explain(&cfg);
    Ok(())
}

/// Parses the config and loads everything it names (certificates, keys,
/// PKCS#12 files, CA bundles, CRLs) exactly as the gateway would.
fn load_and_validate(path: &Path) -> Result<Config, Failure> {
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
}

fn cmd_reload(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config", "--pid"])?;
    let path = flags.required("--config")?;
    // Refuse here, where the operator is looking, what the gateway would refuse.
    let cfg = load_and_validate(Path::new(path))?;
    let pid: i32 = match (flags.one("--pid"), &cfg.server.pid_file) {
        (Some(p), _) => p
            .parse()
            .map_err(|_| Failure::Usage(format!("--pid {p:?} is not a process id")))?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::Runtime(format!(
                    "{}: cannot read the pid file ({e}); is the gateway running?",
                    file.display()
                ))
            })?;
            text.trim().parse().map_err(|_| {
                Failure::Runtime(format!("{}: does not hold a process id", file.display()))
            })?
        }
        (None, None) => {
            return Err(Failure::Usage(
                "the config has no server.pid_file: give --pid".into(),
            ))
        }
    };
    if pid <= 0 {
        return Err(Failure::Usage(format!("{pid} is not a process id")));
    }
    // SAFETY: kill(2) with a positive pid and a valid signal number has no
    // memory effects; failure is reported through errno.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc != 0 {
        return Err(Failure::Runtime(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    println!("{path}: valid; asked process {pid} to reload it (its log says \"config reloaded\")");
    Ok(())
}
