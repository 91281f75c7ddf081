//! Reloads when the files the applied config names change, without SIGHUP
//! (`[reload] watch_files`), and repeats the expiry warnings once a day.
//!
//! Polling, not inotify: every second each file is `stat`ed (following
//! symlinks) and its device, inode, size, mtime and ctime compared. That
//! sees every way certificates get replaced (written in place, renamed over,
//! a symlink swapped as Kubernetes does with `..data`, a directory mounted
//! anew), where an inotify watch follows the inode it was put on and would
//! have to be re-armed on each rename; a few dozen `stat` calls a second
//! cost nothing next to that, and need no unsafe code. A change is acted on
//! once the whole set has been quiet for [`QUIET`] (a certificate written
//! before its key is one change, not two), by the same whole-generation
//! reload SIGHUP uses: a set that does not load is refused with the same log
//! line, the old generation keeps serving, and the next change tries again.
//!
//! The config file itself is not watched: a config edit is applied by
//! `portcullis reload` (SIGHUP), which checks it first, so a half-finished
//! edit (a route removed before its replacement is written) is never
//! applied on save. Certificates and keys are checked as a set at load
//! (the key must match the certificate), a config is not.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, IdentitySource, MtlsMode, PasswordSource};
use crate::metrics::ReloadTrigger;

use super::reload::Reloader;

/// How long the watched files must stay unchanged before a reload.
const QUIET: Duration = Duration::from_millis(500);
/// Between checks while nothing is changing.
const POLL: Duration = Duration::from_secs(1);
/// Between checks while a change is settling.
const SETTLE_POLL: Duration = Duration::from_millis(100);
const DAY: Duration = Duration::from_secs(86_400);

/// The watched files as they were just before the first generation loaded
/// from them: taken before the load, so a change during it is seen (and
/// reloads once more) rather than missed.
pub(super) struct Baseline(Option<(Vec<PathBuf>, Vec<Stamp>)>);

impl Baseline {
    pub(super) fn take(config: &Config) -> Baseline {
        if !config.reload.watch_files {
            return Baseline(None);
        }
        let files = watched_files(config);
        let stamps = files.iter().map(|f| stamp(f)).collect();
        Baseline(Some((files, stamps)))
    }
}

/// Starts the thread (also when `watch_files` is off: it then only repeats
/// the daily expiry warnings).
pub(super) fn spawn(reloader: Arc<Reloader>, baseline: Baseline) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("file-watch".into())
        .spawn(move || watch(&reloader, baseline))
        .map(|_| ())
}

/// What `stat` says about a file, or why it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stamp {
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
    Unreadable(std::io::ErrorKind),
}

fn stamp(path: &std::path::Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => Stamp::File {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        },
        Err(e) => Stamp::Unreadable(e.kind()),
    }
}

/// Every certificate, key, PKCS#12, password, CA bundle and CRL file the
/// config names (not the kept copies of `crl_urls` CRLs: their fetcher
/// reloads itself), sorted, without repeats.
pub(super) fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let identity = |files: &mut Vec<PathBuf>, id: &IdentitySource| match id {
        IdentitySource::Pem {
            certificate,
            private_key,
        } => files.extend([certificate.clone(), private_key.clone()]),
        IdentitySource::Pkcs12 { path, password } => {
            files.push(path.clone());
            if let PasswordSource::File(p) = password {
                files.push(p.clone());
            }
        }
    };
    for s in &config.sites {
        identity(&mut files, &s.identity);
        if s.mtls != MtlsMode::Off {
            files.extend(s.client_ca.iter().cloned());
        }
        files.extend(s.crls.iter().cloned());
    }
    for u in &config.upstreams {
        if let Some(tls) = &u.tls {
            files.extend(tls.ca.iter().cloned());
            if let Some(id) = &tls.client_identity {
                identity(&mut files, id);
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

fn watch(reloader: &Reloader, Baseline(mut baseline): Baseline) {
    let mut next_warning = Instant::now() + DAY;
    // `baseline`: the files and stamps the serving generation was loaded
    // from (as far as this thread knows); `last_seen`: the last stamps seen.
    let mut last_seen: Vec<Stamp> = baseline
        .as_ref()
        .map(|(_, stamps)| stamps.clone())
        .unwrap_or_default();
    let mut changed_at: Option<Instant> = None;
    loop {
        std::thread::sleep(if changed_at.is_some() {
            SETTLE_POLL
        } else {
            POLL
        });
        let config = reloader.applied();
        if Instant::now() >= next_warning {
            next_warning += DAY;
            crate::lifecycle::log_concerns(&reloader.published.inventory(), config.tls.warn_expiry);
        }
        if !config.reload.watch_files {
            baseline = None;
            changed_at = None;
            continue;
        }
        let files = watched_files(&config);
        let stamps: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
        let Some((base_files, base_stamps)) = &mut baseline else {
            baseline = Some((files, stamps.clone()));
            last_seen = stamps;
            continue;
        };
        if *base_files != files {
            // A SIGHUP reload applied a config naming other files: those
            // were loaded by it, so they are the new baseline.
            *base_files = files;
            *base_stamps = stamps.clone();
            last_seen = stamps;
            changed_at = None;
            continue;
        }
        if stamps != last_seen {
            last_seen = stamps;
            changed_at = Some(Instant::now());
            continue;
        }
        let Some(at) = changed_at else { continue };
        if at.elapsed() < QUIET {
            continue;
        }
        changed_at = None;
        if last_seen == *base_stamps {
            continue; // changed and changed back
        }
        let names: Vec<String> = files
            .iter()
            .zip(last_seen.iter().zip(base_stamps.iter()))
            .filter(|(_, (now, then))| now != then)
            .map(|(f, _)| f.display().to_string())
            .collect();
        // Loaded or refused, this set is the new baseline: a refused set is
        // tried again on its next change, not every second.
        *base_stamps = last_seen.clone();
        reloader.reload(
            ReloadTrigger::FileWatch,
            &format!("changed on disk: {}", names.join(", ")),
        );
    }
}
