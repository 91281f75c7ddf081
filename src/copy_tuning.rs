//! Keeps glibc's `memcpy` off `rep movsb` on AMD CPUs, where a copy whose
//! destination lies a few bytes past its source (modulo 4 KiB) runs at a
//! twentieth of its usual speed.
//!
//! Why it matters here: rustls's unbuffered `encrypt` copies every 16 KiB
//! record twice, plaintext into a fresh buffer 5 bytes past its start (after
//! the record header), then the sealed record into our output at offsets 22
//! bytes apart per record. With page-aligned buffers both copies land in the
//! slow case. On the bench host (AMD EPYC, Zen 3, glibc 2.36) a 16 KiB copy
//! with `dst - src` = 5 (mod 4096) ran at 1.6 GB/s against 35-90 GB/s for
//! other offsets, and those two copies took 35% of the gateway core on 1 MiB
//! responses, more than AES-GCM itself. With `rep movsb` off, glibc's vector
//! loop copies every offset at 36-50 GB/s. glibc's own guard against short
//! copy distances (`Avoid_Short_Distance_REP_MOVSB`) did not apply on that
//! CPU: it is set for Intel CPUs.
//!
//! glibc reads its tunables once, when the process starts, so the only way
//! to set one from inside is to execute the same binary again with
//! `GLIBC_TUNABLES` set: same pid, same arguments, same descriptors, before
//! anything else has happened. An operator who sets
//! `glibc.cpu.x86_rep_movsb_threshold` in `GLIBC_TUNABLES` themselves is
//! left alone, and so is every CPU not from AMD.
//!
//! [`decide`] is the pure half (CPU description and environment in, the
//! new `GLIBC_TUNABLES` value out), [`reexec_if_needed`] the shell.

/// The tunable, and a threshold no copy reaches: glibc then uses its vector
/// loop (and, past its non-temporal threshold, streaming stores) for every size.
pub const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";
const THRESHOLD: u64 = 1 << 40;

/// Set (to anything) to keep glibc's own choice: no re-execution.
pub const OPT_OUT_ENV: &str = "PORTCULLIS_KEEP_REP_MOVSB";

/// Set by the re-execution itself, so it happens at most once.
const REEXECUTED_ENV: &str = "PORTCULLIS_REP_MOVSB_REEXECUTED";

/// What to do about `rep movsb` at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run again with this `GLIBC_TUNABLES` value.
    Reexec(String),
    /// Already set, by this process's earlier self or by the operator.
    AlreadySet,
    /// Not an AMD CPU with ERMS/FSRM, or opted out: nothing to do.
    NotNeeded,
}

/// From `/proc/cpuinfo`'s text, the current `GLIBC_TUNABLES` (if any) and
/// whether the opt-out variable is set.
pub fn decide(cpuinfo: &str, tunables: Option<&str>, opted_out: bool) -> Decision {
    if let Some(t) = tunables {
        let ours = t.split(':').any(|kv| kv.split('=').next() == Some(TUNABLE));
        if ours {
            return Decision::AlreadySet;
        }
    }
    if opted_out || !slow_rep_movsb(cpuinfo) {
        return Decision::NotNeeded;
    }
    let setting = format!("{TUNABLE}={THRESHOLD}");
    Decision::Reexec(match tunables {
        Some(t) if !t.is_empty() => format!("{t}:{setting}"),
        _ => setting,
    })
}

/// An AMD CPU on which glibc would use `rep movsb` (it has ERMS or FSRM),
/// judged from the first processor's `vendor_id` and `flags` lines.
fn slow_rep_movsb(cpuinfo: &str) -> bool {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    };
    let amd = field("vendor_id") == Some("AuthenticAMD");
    let flags = field("flags").unwrap_or("");
    amd && flags
        .split_ascii_whitespace()
        .any(|f| f == "erms" || f == "fsrm")
}

/// Executes this binary again with the tunable set, when [`decide`] says
/// so. Returns only if no re-execution was needed or it failed (the process
/// then runs on, with glibc's own choice: slower bulk copies, nothing else).
pub fn reexec_if_needed() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        // Once only: glibc may rewrite GLIBC_TUNABLES in the environment as
        // it parses it (seen in /proc/PID/environ when other tunables come
        // first), so the second start might not find the setting there and
        // would execute itself again and again.
        if std::env::var_os(REEXECUTED_ENV).is_some() {
            return;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let tunables = std::env::var("GLIBC_TUNABLES").ok();
        let opted_out = std::env::var_os(OPT_OUT_ENV).is_some();
        let Decision::Reexec(value) = decide(&cpuinfo, tunables.as_deref(), opted_out) else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        // The path of the file now running (the kernel's, not argv[0]), so
        // the process keeps its name: executed as /proc/self/exe, `ps`,
        // `pgrep portcullis` and systemd would see it as "exe".
        let exe =
            std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/exe"));
        let _ = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", value)
            .env(REEXECUTED_ENV, "1")
            .exec();
    }
}

/// The line `run` logs at start: whether bulk copies avoid `rep movsb`.
pub fn describe() -> Option<String> {
    let tunables = std::env::var("GLIBC_TUNABLES").ok()?;
    let setting = tunables
        .split(':')
        .find(|kv| kv.split('=').next() == Some(TUNABLE))?;
    Some(format!("glibc memcpy: {setting} (rep movsb is slow on this CPU for the copies rustls makes of every TLS record)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN3: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu sse2 avx2 erms invpcid fsrm\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n";
    const INTEL: &str =
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 erms fsrm\n";
    const OLD_AMD: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2\n";

    #[test]
    fn an_amd_cpu_with_erms_or_fsrm_is_run_again_with_the_tunable() {
        assert_eq!(
            decide(ZEN3, None, false),
            Decision::Reexec("glibc.cpu.x86_rep_movsb_threshold=1099511627776".into())
        );
        assert_eq!(
            decide(ZEN3, Some(""), false),
            Decision::Reexec("glibc.cpu.x86_rep_movsb_threshold=1099511627776".into())
        );
    }

    #[test]
    fn other_tunables_are_kept() {
        assert_eq!(
            decide(ZEN3, Some("glibc.malloc.check=3"), false),
            Decision::Reexec(
                "glibc.malloc.check=3:glibc.cpu.x86_rep_movsb_threshold=1099511627776".into()
            )
        );
    }

    #[test]
    fn the_operators_own_setting_and_the_second_start_are_left_alone() {
        for t in [
            "glibc.cpu.x86_rep_movsb_threshold=4096",
            "glibc.malloc.check=3:glibc.cpu.x86_rep_movsb_threshold=1099511627776",
        ] {
            assert_eq!(decide(ZEN3, Some(t), false), Decision::AlreadySet, "{t}");
        }
        // A longer name that starts the same is not ours.
        assert!(matches!(
            decide(ZEN3, Some("glibc.cpu.x86_rep_movsb_threshold_x=1"), false),
            Decision::Reexec(_)
        ));
    }

    #[test]
    fn intel_cpus_old_amd_cpus_unknown_cpus_and_the_opt_out_are_not_touched() {
        assert_eq!(decide(INTEL, None, false), Decision::NotNeeded);
        assert_eq!(decide(OLD_AMD, None, false), Decision::NotNeeded);
        assert_eq!(decide("", None, false), Decision::NotNeeded);
        assert_eq!(decide(ZEN3, None, true), Decision::NotNeeded);
    }
}
