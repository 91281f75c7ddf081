//! `portcullis doctor`: checks the host for what the gateway needs and says,
//! in plain words, what is missing and how to fix it.

use std::path::Path;

use crate::config::{self, Workers};
use crate::runtime;
use crate::tls::ktls;

/// One finding.
struct Finding {
    ok: bool,
    /// A missing piece that stops the gateway (as opposed to costing speed).
    fatal: bool,
    what: String,
    fix: Option<String>,
}

/// Runs every check; returns whether nothing fatal was found.
pub fn run(config_path: Option<&Path>) -> bool {
    let mut findings = vec![io_uring(), kernel_tls(), memlock(), nofile(), somaxconn()];
    findings.push(cores(config_path));
    findings.extend(certificates(config_path));
    let mut fatal = false;
    for f in &findings {
        let tag = if f.ok {
            "ok  "
        } else if f.fatal {
            "FAIL"
        } else {
            "warn"
        };
        println!("[{tag}] {}", f.what);
        if let (false, Some(fix)) = (f.ok, &f.fix) {
            println!("       fix: {fix}");
        }
        fatal |= !f.ok && f.fatal;
    }
    let warnings = findings.iter().filter(|f| !f.ok).count();
    println!(
        "{} checks, {} to look at{}",
        findings.len(),
        warnings,
        if fatal {
            " (the gateway cannot run as configured)"
        } else {
            ""
        }
    );
    !fatal
}

fn io_uring() -> Finding {
    let ok = monoio::utils::detect_uring();
    Finding {
        ok,
        fatal: false,
        what: if ok {
            "io_uring is usable (the fast driver)".into()
        } else {
            "io_uring is not usable: the gateway falls back to epoll".into()
        },
        fix: Some("Linux 5.10+ with io_uring enabled: check `sysctl kernel.io_uring_disabled` (want 0) and any seccomp profile (containers often block io_uring)".into()),
    }
}

fn kernel_tls() -> Finding {
    let support = ktls::probe();
    match support.available {
        Ok(()) => {
            let refused: Vec<String> = support.suites.iter().filter(|(_, r)| r.is_err()).map(|(s, _)| format!("{s:?}")).collect();
            Finding {
                ok: refused.is_empty(),
                fatal: false,
                what: format!(
                    "kernel TLS works ({} of 6 suites; rekey on KeyUpdate: {})",
                    6 - refused.len(),
                    if support.rekey { "yes" } else { "no, connections close on a client KeyUpdate (needs Linux 6.13+)" }
                ),
                fix: Some(format!("suites the kernel refused: {}", refused.join(", "))),
            }
        }
        Err(why) => Finding {
            ok: false,
            fatal: false,
            what: format!("kernel TLS unavailable: {why}; TLS stays in userspace"),
            fix: Some("`modprobe tls` now and `echo tls > /etc/modules-load.d/tls.conf` to keep it (see tuning/)".into()),
        },
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    (rc == 0).then_some((r.rlim_cur, r.rlim_max))
}

fn memlock() -> Finding {
    let want = 64 * 1024 * 1024;
    match rlimit(libc::RLIMIT_MEMLOCK) {
        Some((cur, _)) => Finding {
            ok: cur >= want,
            fatal: false,
            what: format!("locked-memory limit (RLIMIT_MEMLOCK) is {}", human(cur)),
            fix: Some("io_uring rings count against it on kernels before 5.12: LimitMEMLOCK=infinity in the systemd unit (tuning/portcullis.service)".into()),
        },
        None => Finding { ok: false, fatal: false, what: "cannot read RLIMIT_MEMLOCK".into(), fix: None },
    }
}

fn nofile() -> Finding {
    let want = 65_536;
    match rlimit(libc::RLIMIT_NOFILE) {
        Some((cur, max)) => Finding {
            ok: cur >= want,
            fatal: false,
            what: format!("open-file limit (RLIMIT_NOFILE) is {cur} (hard {max}); each client and backend connection is one"),
            fix: Some(format!("LimitNOFILE=1048576 in the systemd unit, or `ulimit -n {want}` in the shell that starts it")),
        },
        None => Finding { ok: false, fatal: false, what: "cannot read RLIMIT_NOFILE".into(), fix: None },
    }
}

fn somaxconn() -> Finding {
    let value = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match value {
        Some(v) => Finding {
            ok: v >= 4096,
            fatal: false,
            what: format!("net.core.somaxconn is {v} (the gateway asks for a 4096-deep accept queue per core)"),
            fix: Some("sysctl -w net.core.somaxconn=65535 (tuning/99-portcullis.conf)".into()),
        },
        None => Finding { ok: false, fatal: false, what: "cannot read net.core.somaxconn".into(), fix: None },
    }
}

fn cores(config_path: Option<&Path>) -> Finding {
    let cores = runtime::available_cores();
    let Some(path) = config_path else {
        return Finding {
            ok: true,
            fatal: false,
            what: format!(
                "{cores} cores available to this process (workers = \"auto\" uses them all)"
            ),
            fix: None,
        };
    };
    match config::load(path) {
        Err(e) => Finding { ok: false, fatal: true, what: format!("config: {e}"), fix: Some("run `portcullis check --config FILE` for details".into()) },
        Ok(cfg) => match cfg.server.workers {
            Workers::Auto => Finding { ok: true, fatal: false, what: format!("workers = \"auto\": {cores} workers, one per core"), fix: None },
            Workers::Count(n) => Finding {
                ok: n <= cores,
                fatal: false,
                what: format!("workers = {n}, cores available = {cores}"),
                fix: Some("more workers than cores makes them share cores and lose their caches: use \"auto\" or at most the core count".into()),
            },
        },
    }
}

/// Expired certificates (and CRLs past nextUpdate) are fatal: clients are
/// refused, or a revoked one may pass. Expiring within `warn_expiry` is a warning.
fn certificates(config_path: Option<&Path>) -> Vec<Finding> {
    let Some(cfg) = config_path.and_then(|p| config::load(p).ok()) else {
        return Vec::new();
    };
    let (inventory, problems) = crate::lifecycle::inventory::collect(&cfg);
    let warn = cfg.tls.warn_expiry;
    let now = crate::expiry::now_unix();
    let mut out: Vec<Finding> = problems
        .into_iter()
        .map(|p| Finding {
            ok: false,
            fatal: true,
            what: format!("certificates: {p}"),
            fix: Some("run `portcullis check --config FILE` for details".into()),
        })
        .collect();
    for c in inventory.concerns(now, warn) {
        let expired = c.standing == crate::expiry::Standing::Expired;
        out.push(Finding {
            ok: false,
            fatal: expired,
            what: c.message,
            fix: Some(if expired {
                "replace it now (with [reload] watch_files the gateway picks up the new file by itself; else `portcullis reload`)".into()
            } else {
                "renew it before it expires (`portcullis certs status` lists every certificate)".into()
            }),
        });
    }
    if out.is_empty() {
        out.push(Finding {
            ok: true,
            fatal: false,
            what: format!(
                "{} certificates and {} CRLs, none expiring within warn_expiry ({})",
                inventory.certs.len(),
                inventory.crls.len(),
                crate::expiry::duration_text(warn)
            ),
            fix: None,
        });
    }
    out
}

fn human(bytes: u64) -> String {
    if bytes == u64::MAX || bytes == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", bytes / 1024)
    }
}
