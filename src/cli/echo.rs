//! `portcullis echo`: the built-in echo backend, plain or TLS/mTLS.

use super::*;

pub(super) fn cmd_echo(args: &[String]) -> Result<(), Failure> {
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
    runtime::install_signal_handlers(|| {}, || {}).map_err(|e| Failure::Runtime(e.to_string()))?;
    let tls = echo_tls(&flags)?;
    let (_, handles) =
        crate::echo::start(&addrs, workers, driver, tls).map_err(Failure::Runtime)?;
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
        verified_chain_cache: config::TlsSettings::default().verified_chain_cache,
        // The echo backend speaks HTTP/1.1 only.
        alpn: vec![config::AppProtocol::Http11],
        ocsp: None,
    };
    let ticketer =
        crate::tls::server_config::site_ticketer().map_err(|e| Failure::Runtime(e.to_string()))?;
    crate::tls::server_config::build(&site, ticketer)
        .map(Some)
        .map_err(Failure::Config)
}
