//! Reads every certificate and CRL a config names into an
//! [`Inventory`](crate::expiry::Inventory): site and listener chains, client
//! CAs, CRL files and the kept copies of `crl_urls` CRLs, upstream CAs and
//! upstream client identities. The files are read with the same loaders the
//! generation uses, so what is listed is what is served.

use std::path::{Path, PathBuf};

use crate::config::{Config, IdentitySource, MtlsMode};
use crate::expiry::{describe_cert, describe_crl, CertEntry, CertKind, CrlEntry, Inventory};
use crate::tls::material;

/// Every certificate and CRL of `config`, and one message per file that
/// could not be read (the rest is still listed).
pub fn collect(config: &Config) -> (Inventory, Vec<String>) {
    let mut c = Collector::default();
    for s in &config.sites {
        c.identity(CertKind::Server, &s.name, &s.identity);
        if s.mtls != MtlsMode::Off {
            for ca in &s.client_ca {
                c.bundle(CertKind::ClientCa, &s.name, ca);
            }
        }
        for crl in &s.crls {
            c.crl(&s.name, crl, &crl.display().to_string());
        }
        for url in &s.crl_urls {
            match &config.state_dir {
                Some(dir) => {
                    let copy = super::state::crl_copy_path(dir, url);
                    if copy.exists() {
                        c.crl(&s.name, &copy, &url.text);
                    } else {
                        c.problems.push(format!(
                            "site \"{}\": crl_urls {}: no copy fetched yet ({} does not exist)",
                            s.name,
                            url,
                            copy.display()
                        ));
                    }
                }
                None => c
                    .problems
                    .push(format!("site \"{}\": crl_urls without [state] dir", s.name)),
            }
        }
    }
    for u in &config.upstreams {
        let Some(tls) = &u.tls else { continue };
        for ca in &tls.ca {
            c.bundle(CertKind::UpstreamCa, &u.name, ca);
        }
        if let Some(id) = &tls.client_identity {
            c.identity(CertKind::UpstreamClient, &u.name, id);
        }
    }
    (c.inventory, c.problems)
}

#[derive(Default)]
struct Collector {
    inventory: Inventory,
    problems: Vec<String>,
}

impl Collector {
    fn certs(&mut self, kind: CertKind, site: &str, file: &Path, ders: &[&[u8]]) {
        for der in ders {
            match describe_cert(der) {
                Ok((subject, not_after)) => self.inventory.certs.push(CertEntry {
                    kind,
                    site: site.to_string(),
                    file: file.display().to_string(),
                    subject,
                    not_after,
                }),
                Err(e) => self.problems.push(format!("{}: {e}", file.display())),
            }
        }
    }

    fn identity(&mut self, kind: CertKind, site: &str, source: &IdentitySource) {
        let file: PathBuf = match source {
            IdentitySource::Pem { certificate, .. } => certificate.clone(),
            IdentitySource::Pkcs12 { path, .. } => path.clone(),
        };
        match material::load_identity(source) {
            Ok(id) => {
                let ders: Vec<&[u8]> = id.chain.iter().map(|c| c.as_ref()).collect();
                self.certs(kind, site, &file, &ders);
            }
            Err(e) => self.problems.push(e.to_string()),
        }
    }

    fn bundle(&mut self, kind: CertKind, site: &str, file: &Path) {
        match material::load_ca_bundle(&[file.to_path_buf()]) {
            Ok(certs) => {
                let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
                self.certs(kind, site, file, &ders);
            }
            Err(e) => self.problems.push(e.to_string()),
        }
    }

    fn crl(&mut self, site: &str, path: &Path, label: &str) {
        match material::load_crls(&[path.to_path_buf()]) {
            Ok(crls) => {
                for der in &crls {
                    match describe_crl(der.as_ref()) {
                        Ok((issuer, this_update, next_update)) => {
                            self.inventory.crls.push(CrlEntry {
                                site: site.to_string(),
                                file: label.to_string(),
                                issuer,
                                this_update,
                                next_update,
                            })
                        }
                        Err(e) => self.problems.push(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) => self.problems.push(e.to_string()),
        }
    }
}
