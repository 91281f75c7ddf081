//! Certificate and CRL lifetimes, as pure data: what the gateway holds
//! ([`Inventory`]: every certificate with its kind, site, file, subject and
//! notAfter; every CRL with its nextUpdate), how it reads in Prometheus text
//! (`portcullis_cert_expiry_seconds` and friends, computed from the stored
//! dates at scrape time), in the `certs status` table, and which entries
//! deserve a warning. No I/O here: `lifecycle::inventory` reads the files,
//! the gateway, `certs status` and `doctor` print or log what this returns.

use std::fmt::Write as _;
use std::time::Duration;

/// What a certificate is for, the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// A site's or listener's own certificate chain (leaf and intermediates).
    Server,
    /// A CA client certificates must chain to.
    ClientCa,
    /// A CA an upstream's certificate must chain to.
    UpstreamCa,
    /// The certificate chain the gateway presents to an upstream.
    UpstreamClient,
}

impl CertKind {
    pub fn label(self) -> &'static str {
        match self {
            CertKind::Server => "server",
            CertKind::ClientCa => "client_ca",
            CertKind::UpstreamCa => "upstream_ca",
            CertKind::UpstreamClient => "upstream_client",
        }
    }
}

/// One certificate the gateway holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertEntry {
    pub kind: CertKind,
    /// The site's name (`listener[i]` for a listener's own), or the
    /// upstream's name for the upstream kinds.
    pub site: String,
    /// The file it was read from, as configured.
    pub file: String,
    /// RFC 4514-style subject, e.g. `CN=localhost`.
    pub subject: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// One CRL a site checks client certificates against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    pub site: String,
    /// The file, or for `crl_urls` the URL.
    pub file: String,
    pub issuer: String,
    /// thisUpdate, seconds since the Unix epoch.
    pub this_update: i64,
    /// nextUpdate (optional in X.509), seconds since the Unix epoch.
    pub next_update: Option<i64>,
}

/// Everything with a lifetime in one config generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub certs: Vec<CertEntry>,
    pub crls: Vec<CrlEntry>,
}

/// The subject and notAfter of a DER certificate.
pub fn describe_cert(der: &[u8]) -> Result<(String, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok((
        cert.subject().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The issuer, thisUpdate and nextUpdate of a DER CRL.
pub fn describe_crl(der: &[u8]) -> Result<(String, i64, Option<i64>), String> {
    let (_, crl) =
        x509_parser::parse_x509_crl(der).map_err(|e| format!("not an X.509 CRL: {e}"))?;
    Ok((
        crl.issuer().to_string(),
        crl.last_update().timestamp(),
        crl.next_update().map(|t| t.timestamp()),
    ))
}

/// Where a date stands against now and the warning window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// Within `warn_expiry` of its date.
    Expiring,
    /// Past it (a certificate no longer valid; a CRL past its nextUpdate).
    Expired,
}

pub fn standing(deadline: i64, now: i64, warn: Duration) -> Standing {
    let warn = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
    if deadline <= now {
        Standing::Expired
    } else if deadline - now <= warn {
        Standing::Expiring
    } else {
        Standing::Valid
    }
}

/// One entry that is expiring or expired, with a sentence saying so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concern {
    pub standing: Standing,
    pub message: String,
}

impl Inventory {
    /// Every certificate expiring within `warn` or expired, and every CRL
    /// past its nextUpdate (or within `warn` of it), in inventory order.
    pub fn concerns(&self, now: i64, warn: Duration) -> Vec<Concern> {
        let mut out = Vec::new();
        for c in &self.certs {
            let st = standing(c.not_after, now, warn);
            let when = match st {
                Standing::Valid => continue,
                Standing::Expiring => format!("expires in {}", days_text(c.not_after - now)),
                Standing::Expired => format!("EXPIRED {} ago", days_text(now - c.not_after)),
            };
            out.push(Concern {
                standing: st,
                message: format!(
                    "{} certificate \"{}\" of {} \"{}\" in {} {when} (notAfter {})",
                    c.kind.label(),
                    c.subject,
                    if matches!(c.kind, CertKind::UpstreamCa | CertKind::UpstreamClient) {
                        "upstream"
                    } else {
                        "site"
                    },
                    c.site,
                    c.file,
                    date_text(c.not_after)
                ),
            });
        }
        for c in &self.crls {
            let Some(next) = c.next_update else { continue };
            let st = standing(next, now, warn);
            let when = match st {
                Standing::Valid => continue,
                Standing::Expiring => {
                    format!("reaches its nextUpdate in {}", days_text(next - now))
                }
                Standing::Expired => format!(
                    "is PAST its nextUpdate by {} (the CA should have published a newer one)",
                    days_text(now - next)
                ),
            };
            out.push(Concern {
                standing: st,
                message: format!(
                    "CRL of \"{}\" for site \"{}\" from {} {when} (nextUpdate {})",
                    c.issuer,
                    c.site,
                    c.file,
                    date_text(next)
                ),
            });
        }
        out
    }

    /// Whether any certificate has expired or any CRL is past its nextUpdate.
    pub fn any_expired(&self, now: i64) -> bool {
        self.concerns(now, Duration::ZERO)
            .iter()
            .any(|c| c.standing == Standing::Expired)
    }

    /// Appends the expiry gauges in Prometheus text. Several certificates in
    /// one file (a chain, a CA bundle) share their labels, so each series
    /// holds the file's earliest notAfter: the one that breaks first.
    pub fn render_metrics(&self, now: i64, out: &mut String) {
        let mut series: Vec<(String, i64)> = Vec::new();
        for c in &self.certs {
            let labels = format!(
                "site=\"{}\",file=\"{}\",kind=\"{}\"",
                escape(&c.site),
                escape(&c.file),
                c.kind.label()
            );
            match series.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, t)) => *t = (*t).min(c.not_after),
                None => series.push((labels, c.not_after)),
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_cert_expiry_seconds Seconds until the certificate's notAfter (negative once expired); the earliest of the file's certificates.\n# TYPE portcullis_cert_expiry_seconds gauge"
        );
        for (labels, t) in &series {
            let _ = writeln!(
                out,
                "portcullis_cert_expiry_seconds{{{labels}}} {}",
                t - now
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_cert_not_after_timestamp_seconds The certificate's notAfter (Unix time); the earliest of the file's certificates.\n# TYPE portcullis_cert_not_after_timestamp_seconds gauge"
        );
        for (labels, t) in &series {
            let _ = writeln!(
                out,
                "portcullis_cert_not_after_timestamp_seconds{{{labels}}} {t}"
            );
        }
        let mut crls: Vec<(String, i64)> = Vec::new();
        for c in &self.crls {
            let Some(next) = c.next_update else { continue };
            let labels = format!("site=\"{}\",file=\"{}\"", escape(&c.site), escape(&c.file));
            match crls.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, t)) => *t = (*t).min(next),
                None => crls.push((labels, next)),
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_crl_next_update_timestamp_seconds The CRL's nextUpdate (Unix time); the earliest of the file's CRLs.\n# TYPE portcullis_crl_next_update_timestamp_seconds gauge"
        );
        for (labels, t) in &crls {
            let _ = writeln!(
                out,
                "portcullis_crl_next_update_timestamp_seconds{{{labels}}} {t}"
            );
        }
    }

    /// The `certs status` table: one row per certificate, then per CRL.
    pub fn table(&self, now: i64, warn: Duration) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "KIND".into(),
            "SITE".into(),
            "STATUS".into(),
            "DAYS LEFT".into(),
            "NOT AFTER / NEXT UPDATE".into(),
            "SUBJECT / ISSUER".into(),
            "FILE".into(),
        ]];
        let status = |st: Standing, crl: bool| match (st, crl) {
            (Standing::Valid, _) => "ok",
            (Standing::Expiring, _) => "EXPIRING",
            (Standing::Expired, false) => "EXPIRED",
            (Standing::Expired, true) => "STALE",
        };
        for c in &self.certs {
            rows.push([
                c.kind.label().into(),
                c.site.clone(),
                status(standing(c.not_after, now, warn), false).into(),
                days_left(c.not_after - now),
                date_text(c.not_after),
                c.subject.clone(),
                c.file.clone(),
            ]);
        }
        for c in &self.crls {
            let (st, left, date) = match c.next_update {
                Some(next) => (
                    status(standing(next, now, warn), true),
                    days_left(next - now),
                    date_text(next),
                ),
                None => ("ok", "-".into(), "(no nextUpdate)".into()),
            };
            rows.push([
                "crl".into(),
                c.site.clone(),
                st.into(),
                left,
                date,
                c.issuer.clone(),
                c.file.clone(),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// "12.3" days, negative once past.
fn days_left(seconds: i64) -> String {
    format!("{:.1}", seconds as f64 / 86_400.0)
}

/// "4.2 days" (or hours when under a day).
fn days_text(seconds: i64) -> String {
    if seconds < 86_400 {
        format!("{:.1} hours", seconds as f64 / 3600.0)
    } else {
        format!("{:.1} days", seconds as f64 / 86_400.0)
    }
}

/// RFC 3339 in UTC, e.g. `2026-12-06T17:31:47Z`.
pub fn date_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// A warning window as written in config: "21d", "36h", "90s".
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s != 0 && s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn cert(kind: CertKind, site: &str, file: &str, not_after: i64) -> CertEntry {
        CertEntry {
            kind,
            site: site.into(),
            file: file.into(),
            subject: "CN=x".into(),
            not_after,
        }
    }

    fn sample() -> Inventory {
        Inventory {
            certs: vec![
                cert(CertKind::Server, "a", "/s.pem", NOW + 40 * DAY),
                // An intermediate in the same file that expires first.
                cert(CertKind::Server, "a", "/s.pem", NOW + 5 * DAY),
                cert(CertKind::ClientCa, "a", "/ca.pem", NOW - DAY),
                cert(CertKind::UpstreamClient, "b\"e", "/u.pem", NOW + 100),
            ],
            crls: vec![
                CrlEntry {
                    site: "a".into(),
                    file: "http://h/c.crl".into(),
                    issuer: "CN=ca".into(),
                    this_update: NOW - DAY,
                    next_update: Some(NOW + 7 * DAY),
                },
                CrlEntry {
                    site: "a".into(),
                    file: "/none.crl".into(),
                    issuer: "CN=ca".into(),
                    this_update: NOW - DAY,
                    next_update: None,
                },
            ],
        }
    }

    #[test]
    fn standing_edges() {
        let w = Duration::from_secs(10);
        assert_eq!(standing(NOW, NOW, w), Standing::Expired);
        assert_eq!(standing(NOW + 1, NOW, w), Standing::Expiring);
        assert_eq!(standing(NOW + 10, NOW, w), Standing::Expiring);
        assert_eq!(standing(NOW + 11, NOW, w), Standing::Valid);
        assert_eq!(standing(NOW + 1, NOW, Duration::ZERO), Standing::Valid);
    }

    #[test]
    fn metrics_hold_each_files_earliest_date_computed_from_now() {
        let mut out = String::new();
        sample().render_metrics(NOW, &mut out);
        let want = [
            format!(
                "portcullis_cert_expiry_seconds{{site=\"a\",file=\"/s.pem\",kind=\"server\"}} {}",
                5 * DAY
            ),
            format!(
                "portcullis_cert_expiry_seconds{{site=\"a\",file=\"/ca.pem\",kind=\"client_ca\"}} {}",
                -DAY
            ),
            "portcullis_cert_expiry_seconds{site=\"b\\\"e\",file=\"/u.pem\",kind=\"upstream_client\"} 100".to_string(),
            format!(
                "portcullis_cert_not_after_timestamp_seconds{{site=\"a\",file=\"/s.pem\",kind=\"server\"}} {}",
                NOW + 5 * DAY
            ),
            format!(
                "portcullis_crl_next_update_timestamp_seconds{{site=\"a\",file=\"http://h/c.crl\"}} {}",
                NOW + 7 * DAY
            ),
        ];
        for line in want {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        assert_eq!(out.matches("portcullis_cert_expiry_seconds{").count(), 3);
        assert!(
            !out.contains("none.crl"),
            "a CRL without nextUpdate has no series"
        );
        // Every family has its HELP and TYPE even when empty.
        let mut empty = String::new();
        Inventory::default().render_metrics(NOW, &mut empty);
        assert_eq!(empty.matches("# TYPE").count(), 3);
    }

    #[test]
    fn concerns_and_expired() {
        let inv = sample();
        let c = inv.concerns(NOW, Duration::from_secs(21 * DAY as u64));
        let kinds: Vec<Standing> = c.iter().map(|c| c.standing).collect();
        assert_eq!(
            kinds,
            vec![
                Standing::Expiring,
                Standing::Expired,
                Standing::Expiring,
                Standing::Expiring
            ]
        );
        assert!(
            c[1].message.contains(
                "client_ca certificate \"CN=x\" of site \"a\" in /ca.pem EXPIRED 1.0 days ago"
            ),
            "{}",
            c[1].message
        );
        assert!(
            c[2].message.contains("of upstream \"b\"e\""),
            "{}",
            c[2].message
        );
        assert!(c[3].message.starts_with("CRL of \"CN=ca\" for site \"a\" from http://h/c.crl reaches its nextUpdate in 7.0 days"), "{}", c[3].message);
        assert!(inv.any_expired(NOW));
        let mut fine = inv.clone();
        fine.certs.remove(2);
        assert!(!fine.any_expired(NOW));
        fine.crls[0].next_update = Some(NOW - 1);
        assert!(
            fine.any_expired(NOW),
            "a CRL past nextUpdate counts as expired"
        );
    }

    #[test]
    fn table_rows() {
        let t = sample().table(NOW, Duration::from_secs(21 * DAY as u64));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 7, "{t}");
        assert!(lines[0].starts_with("KIND"));
        let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(cols(lines[1])[..4], ["server", "a", "ok", "40.0"]);
        assert_eq!(cols(lines[2])[..4], ["server", "a", "EXPIRING", "5.0"]);
        assert_eq!(cols(lines[3])[..4], ["client_ca", "a", "EXPIRED", "-1.0"]);
        assert_eq!(cols(lines[5])[..4], ["crl", "a", "EXPIRING", "7.0"]);
        assert!(lines[6].contains("(no nextUpdate)"));
        assert!(lines[3].ends_with("/ca.pem"));
    }

    #[test]
    fn dates() {
        assert_eq!(date_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(days_text(3 * 3600), "3.0 hours");
    }
}
