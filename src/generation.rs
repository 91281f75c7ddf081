//! A config generation: everything one config file says, loaded and checked
//! (certificates, keys, CA bundles, CRLs, routes), ready to serve.
//!
//! A reload builds a new generation beside the running one and swaps it in
//! only when every part loaded; connections keep the generation they were
//! accepted under until they close. Each core then builds its own TLS configs
//! from the shared material, so session caches stay core-local.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ProducesTickets;
use rustls::{ClientConfig, ServerConfig};

use crate::config::{
    Config, EscapedSlashes, HostMatch, Http2Settings, Limits, MtlsMode, PathOptions, Timeouts,
    TrustedProxies,
};
use crate::expiry::Inventory;
use crate::metrics::Published;
use crate::router::RouteTable;
use crate::tls::client::{self as upstream_tls, UpstreamTlsSettings};
use crate::tls::material;
use crate::tls::server_config::{self, SiteTls};

/// Read-only settings every core proxies with.
pub struct GatewaySettings {
    pub routes: RouteTable,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub access_log: bool,
    /// Lowercased identity header names, stripped from every request.
    pub identity_headers: Vec<String>,
    /// How request paths are normalised before routing.
    pub paths: PathOptions,
    /// Limits of HTTP/2 client connections.
    pub http2: Http2Settings,
}

pub struct Generation {
    /// 1 for the config the process started with, +1 per successful reload.
    pub id: u64,
    pub settings: GatewaySettings,
    pub sites: Vec<Site>,
    /// Per `[[listener]]`, in config order.
    pub listeners: Vec<ListenerSites>,
    pub upstreams: Vec<Upstream>,
    /// Every certificate and CRL this generation holds, with its dates
    /// (the expiry gauges, warnings and `certs status`).
    pub inventory: Inventory,
}

pub struct Site {
    pub name: String,
    pub server_names: Vec<HostMatch>,
    pub mtls: MtlsMode,
    tls: SiteTls,
    /// This site's own session-ticket key, new with every generation: a
    /// ticket must only resume under the trust configuration that verified
    /// its client (another site's CAs, or this site's before a reload
    /// changed a CA or CRL, must never accept it).
    ticketer: Arc<dyn ProducesTickets>,
}

pub struct ListenerSites {
    pub sites: Vec<usize>,
    pub default_site: Option<usize>,
    /// Whose X-Forwarded-For (and PROXY header) is believed. Part of the
    /// generation, so a reload can change it for new connections.
    pub trusted_proxies: TrustedProxies,
    /// A PROXY header is required before TLS.
    pub proxy_protocol: bool,
}

pub struct Upstream {
    pub name: String,
    pub addresses: Vec<SocketAddr>,
    pub tls: Option<UpstreamTlsMaterial>,
}

pub struct UpstreamTlsMaterial {
    pub server_name: ServerName<'static>,
    roots: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    verify_hostname: bool,
}

impl UpstreamTlsMaterial {
    /// A digest of everything a connection made with this material was
    /// authenticated with: the pool key's TLS half. Equal content gives an
    /// equal digest across reloads, so unchanged backends keep their pools.
    pub fn identity_digest(&self) -> [u8; 32] {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.server_name.to_str().as_bytes());
        field(&[u8::from(self.verify_hostname)]);
        for ca in &self.roots {
            field(ca.as_ref());
        }
        field(b"--client--");
        if let Some((chain, _)) = &self.identity {
            for cert in chain {
                field(cert.as_ref());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        out
    }

    fn client(&self) -> Result<UpstreamClient, String> {
        Ok(UpstreamClient {
            config: self.client_config()?,
            server_name: self.server_name.clone(),
            identity: self.identity_digest(),
        })
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        upstream_tls::client_config(UpstreamTlsSettings {
            roots: self.roots.clone(),
            client_identity: self
                .identity
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            verify_hostname: self.verify_hostname,
        })
    }
}

impl Generation {
    /// Loads every file the config names and builds each TLS config once, so
    /// that nothing can fail later on a worker. Errors name the site or
    /// upstream and the file.
    pub fn load(config: &Config, id: u64, published: &Published) -> Result<Generation, String> {
        let mut sites = Vec::with_capacity(config.sites.len());
        for s in &config.sites {
            let context = |e: material::MaterialError| format!("site \"{}\": {e}", s.name);
            let identity = material::load_identity(&s.identity).map_err(context)?;
            let client_roots = if s.mtls == MtlsMode::Off {
                Vec::new()
            } else {
                material::load_ca_bundle(&s.client_ca).map_err(context)?
            };
            let mut crls = material::load_crls(&s.crls).map_err(context)?;
            for url in &s.crl_urls {
                crls.extend(kept_crl(config, &s.name, url)?);
            }
            // Registered (or found again, when a reload kept the certificate
            // and its response) before the TLS configs are built with it.
            let ocsp = match &s.ocsp {
                None => None,
                Some(want) => {
                    let chain: Vec<&[u8]> = identity.chain.iter().map(|c| c.as_ref()).collect();
                    Some(
                        published
                            .ocsp()
                            .register(&s.name, &chain, want)
                            .map_err(|e| format!("site \"{}\": ocsp_stapling: {e}", s.name))?,
                    )
                }
            };
            let tls = SiteTls {
                name: s.name.clone(),
                chain: identity.chain,
                key: identity.key,
                client_roots,
                crls,
                mtls: s.mtls,
                versions: s.tls_versions,
                verified_chain_cache: config.tls.verified_chain_cache,
                alpn: s.alpn.clone(),
                ocsp,
            };
            let ticketer = server_config::site_ticketer().map_err(|e| {
                format!("site \"{}\": cannot create the TLS ticket key: {e}", s.name)
            })?;
            server_config::build(&tls, ticketer.clone())?;
            sites.push(Site {
                name: s.name.clone(),
                server_names: s.server_names.clone(),
                mtls: s.mtls,
                tls,
                ticketer,
            });
        }
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let context = |e: String| format!("upstream \"{}\": {e}", u.name);
            let tls = match &u.tls {
                None => None,
                Some(t) => {
                    let roots =
                        material::load_ca_bundle(&t.ca).map_err(|e| context(e.to_string()))?;
                    let identity = match &t.client_identity {
                        None => None,
                        Some(source) => {
                            let id = material::load_identity(source)
                                .map_err(|e| context(e.to_string()))?;
                            Some((id.chain, id.key))
                        }
                    };
                    let server_name = ServerName::try_from(t.server_name.clone())
                        .map_err(|e| context(format!("server_name \"{}\": {e}", t.server_name)))?;
                    let material = UpstreamTlsMaterial {
                        server_name,
                        roots,
                        identity,
                        verify_hostname: t.verify_hostname,
                    };
                    material.client_config().map_err(context)?;
                    if !t.verify_hostname {
                        tracing::warn!(
                            upstream = %u.name,
                            server_name = %t.server_name,
                            "insecure_skip_verify_hostname = true: the backend's certificate chain is verified, but not that it was issued for this name"
                        );
                    }
                    Some(material)
                }
            };
            upstreams.push(Upstream {
                name: u.name.clone(),
                addresses: u.addresses.clone(),
                tls,
            });
        }
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                log_trust(l);
                ListenerSites {
                    sites: l.sites.clone(),
                    default_site: l.default_site,
                    trusted_proxies: l.trusted_proxies.clone(),
                    proxy_protocol: l.proxy_protocol,
                }
            })
            .collect();
        warn_unsafe_paths(&config.paths);
        let slots: Vec<usize> = config
            .routes
            .iter()
            .map(|r| published.route_slot(&route_label(config, r)))
            .collect();
        let (inventory, problems) = crate::lifecycle::inventory::collect(config);
        for p in problems {
            // Everything above loaded, so this is a file changed in between
            // (the next change reloads again): the expiry list misses it.
            tracing::warn!("certificate inventory incomplete: {p}");
        }
        Ok(Generation {
            inventory,
            id,
            settings: GatewaySettings {
                routes: RouteTable::new(&config.routes, &slots),
                limits: config.limits,
                timeouts: config.timeouts,
                access_log: config.server.access_log,
                identity_headers: config.identity_headers.clone(),
                paths: config.paths,
                http2: config.http2,
            },
            sites,
            listeners,
            upstreams,
        })
    }

    /// The site a TLS server name selects on a listener: an exact name beats
    /// a wildcard; no match (or no SNI) selects the listener's default.
    /// `name` is in the normal form of `http::host` (the SNI and the Host
    /// header go through the same normaliser as `server_names`).
    pub fn site_for_name(&self, listener: usize, name: Option<&str>) -> Option<usize> {
        let l = self.listeners.get(listener)?;
        let Some(name) = name else {
            return l.default_site;
        };
        let exact = l.sites.iter().copied().find(|&i| {
            self.sites[i]
                .server_names
                .iter()
                .any(|m| matches!(m, HostMatch::Exact(e) if e == name))
        });
        let wildcard = || {
            l.sites
                .iter()
                .copied()
                .filter_map(|i| {
                    let longest = self.sites[i]
                        .server_names
                        .iter()
                        .filter(|m| matches!(m, HostMatch::WildcardSuffix(_)) && m.matches(name))
                        .map(|m| match m {
                            HostMatch::WildcardSuffix(s) => s.len(),
                            HostMatch::Exact(_) => 0,
                        })
                        .max()?;
                    Some((longest, i))
                })
                .max()
                .map(|(_, i)| i)
        };
        exact.or_else(wildcard).or(l.default_site)
    }

    /// Builds this core's own TLS configs from the shared material.
    pub fn for_worker(self: &Arc<Self>) -> Result<WorkerGeneration, String> {
        let server_configs = self
            .sites
            .iter()
            .map(|s| server_config::build(&s.tls, s.ticketer.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream_configs = self
            .upstreams
            .iter()
            .map(|u| u.tls.as_ref().map(UpstreamTlsMaterial::client).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WorkerGeneration {
            shared: self.clone(),
            server_configs,
            upstream_configs,
            round_robin: (0..self.settings.routes.len())
                .map(|_| Cell::new(0))
                .collect(),
        })
    }
}

/// The kept copy of a `crl_urls` CRL (`lifecycle::state`): fetched at start
/// and by the CRL thread, never here, so a reload never waits on the network.
fn kept_crl(
    config: &Config,
    site: &str,
    url: &crate::config::CrlUrl,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, String> {
    let Some(dir) = &config.state_dir else {
        return Err(format!("site \"{site}\": crl_urls needs [state] dir"));
    };
    let copy = crate::lifecycle::state::crl_copy_path(dir, url);
    if !copy.exists() {
        return Err(format!(
            "site \"{site}\": crl_urls {url}: no copy of this CRL yet (it could not be fetched; the last good copy would be {})",
            copy.display()
        ));
    }
    material::load_crls(&[copy])
        .map_err(|e| format!("site \"{site}\": crl_urls {url}: kept copy {e}"))
}

/// Path choices that let a backend read a path differently from the router
/// are allowed, but said out loud at every (re)load.
fn warn_unsafe_paths(paths: &PathOptions) {
    if paths.escaped_slashes == EscapedSlashes::Keep {
        tracing::warn!(
            "[paths] escaped_slashes = \"keep\": %2F is forwarded and never treated as a separator; a backend that decodes it before resolving \"..\" can reach paths the routes did not see"
        );
    }
    if !paths.merge_slashes {
        tracing::warn!(
            "[paths] merge_slashes = false: \"//admin\" does not match a route for \"/admin\"; a backend that merges slashes serves it as \"/admin\""
        );
    }
}

/// Trusting another host about who the client is was chosen explicitly: say
/// so at start (and at each reload), louder when it trusts everyone.
fn log_trust(l: &crate::config::ListenerConfig) {
    let networks = l.trusted_proxies.networks();
    if networks.is_empty() {
        return;
    }
    let list: Vec<String> = networks.iter().map(ToString::to_string).collect();
    tracing::info!(
        listener = %l.address,
        trusted_proxies = %list.join(","),
        proxy_protocol = l.proxy_protocol,
        "trusted_proxies set: from these peers X-Forwarded-For is kept and the client is its right-most untrusted address{}",
        if l.proxy_protocol {
            "; every connection must start with a PROXY header from one of them"
        } else {
            ""
        }
    );
    if networks.iter().any(|n| n.is_everything()) {
        tracing::warn!(
            listener = %l.address,
            "trusted_proxies contains a /0: any client can name its own address in X-Forwarded-For{}",
            if l.proxy_protocol { " or a PROXY header" } else { "" }
        );
    }
}

/// The metric label of a route: host, site and path, as an operator wrote them.
fn route_label(config: &Config, r: &crate::config::RouteConfig) -> String {
    let mut label = String::new();
    if let Some(site) = r.site.and_then(|i| config.sites.get(i)) {
        label.push_str(&format!("site={} ", site.name));
    }
    if let Some(h) = &r.host {
        label.push_str(&format!("{h:?} "));
    }
    label.push_str(&r.path);
    label
}

/// How this core connects to a TLS upstream.
#[derive(Clone)]
pub struct UpstreamClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// [`UpstreamTlsMaterial::identity_digest`]: the pool key's TLS half.
    pub identity: [u8; 32],
}

/// One core's view of a generation. Connections hold it (`Rc`) for their life.
pub struct WorkerGeneration {
    pub shared: Arc<Generation>,
    /// Per site, built on this core.
    pub server_configs: Vec<Arc<ServerConfig>>,
    /// Per upstream; None for plain HTTP.
    pub upstream_configs: Vec<Option<UpstreamClient>>,
    /// Round-robin position per route.
    pub round_robin: Vec<Cell<usize>>,
}

/// Where the current generation is published for the workers. A worker reads
/// the version number (one relaxed atomic load per accepted connection) and
/// takes the lock only when it changed, i.e. once per reload.
pub struct Current {
    version: AtomicU64,
    generation: Mutex<Arc<Generation>>,
}

impl Current {
    pub fn new(first: Generation) -> Arc<Current> {
        Arc::new(Current {
            version: AtomicU64::new(first.id),
            generation: Mutex::new(Arc::new(first)),
        })
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Arc<Generation> {
        match self.generation.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, next: Generation) {
        let id = next.id;
        match self.generation.lock() {
            Ok(mut g) => *g = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        self.version.store(id, Ordering::Release);
    }
}
