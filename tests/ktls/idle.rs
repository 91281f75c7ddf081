//! Idle memory once the kernel holds the keys (issue 13): the RSS growth per
//! idle kTLS connection (full mTLS handshake, one request or the HTTP/2
//! preface, then silence), for HTTP/1.1 and for HTTP/2, each in a fresh
//! one-worker gateway (a gateway that has just moved 10 MiB bodies has
//! freed pages that new connections reuse, which hides their cost). A
//! measurement: it fails only if the connections cannot be opened; the
//! figure and the goal are printed.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::{connect, request, spawn, wait_exit, wait_port, Suite, Tls, ECHO};

/// The measured gateway's own port (the suite's gateway keeps running).
const IDLE_GATEWAY: &str = "127.0.0.1:8445";

/// Connections per measurement: enough to see past allocator noise, few
/// enough for an emulated CPU (each is a full handshake).
const N: usize = 200;
/// The goal once the kernel holds the keys.
const GOAL_KIB: f64 = 4.0;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts a fresh one-worker kTLS gateway, opens one connection with `open`
/// to warm it (first-use allocations), then N more, and returns the RSS
/// growth per connection (KiB) over those N.
fn per_connection(
    bin: &Path,
    work: &Path,
    open: impl Fn(usize) -> Result<Tls, String>,
) -> Result<f64, String> {
    let config = work.join("idle.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nworkers = 1\n[[listener]]\naddress = \"{IDLE_GATEWAY}\"\ncertificate = \"pki/server.pem\"\nprivate_key = \"pki/server.key\"\nclient_ca = [\"pki/ca.pem\"]\nktls = \"on\"\n[timeouts]\nidle = \"10m\"\n[[route]]\npath = \"/\"\nbackends = [\"{ECHO}\"]\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut gw = spawn(
        Command::new(bin).arg("run").arg("--config").arg(&config),
        &work.join("idle-gw.log"),
    );
    wait_port(IDLE_GATEWAY);
    let measured = (|| {
        let warm = open(N)?;
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(gw.id());
        let mut held = Vec::with_capacity(N);
        for i in 0..N {
            held.push(open(i)?);
        }
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_kib(gw.id());
        drop((warm, held));
        Ok((after.saturating_sub(before)) as f64 / N as f64)
    })();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gw.id().to_string())
        .status();
    let exit = wait_exit(&mut gw, Duration::from_secs(15));
    if exit.is_none() {
        // Killed: reap it, so the next measurement's gateway does not meet
        // this one's listener still in the port's SO_REUSEPORT group.
        println!("  NOTE: the idle-memory gateway did not exit within 15 s of SIGTERM (killed)");
        let _ = gw.wait();
    }
    // On a failure, what the gateway said: the log is overwritten by the
    // next measurement's gateway.
    measured.map_err(|e: String| {
        let log = std::fs::read_to_string(work.join("idle-gw.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{e}; gateway exit {exit:?}, its log:\n    {}",
            tail.join("\n    ")
        )
    })
}

pub fn checks(
    suite: &mut Suite,
    bin: &Path,
    work: &Path,
    tls13: &Arc<ClientConfig>,
    h2cfg: &Arc<ClientConfig>,
) {
    suite.check(
        &format!("idle memory: RSS per idle kTLS connection, HTTP/1.1 ({N} connections)"),
        || {
            let kib = per_connection(bin, work, |i| {
                let mut tls = connect(IDLE_GATEWAY, tls13)?;
                let path = format!("/idle/{i}");
                let (status, _) = request(&mut tls, &path, &[], None)?;
                if status != 200 {
                    return Err(format!("{path}: status {status}"));
                }
                Ok(tls)
            })?;
            println!(
                "  RSS per idle kTLS HTTP/1.1 connection: {kib:.1} KiB (goal <= {GOAL_KIB} KiB: {})",
                if kib <= GOAL_KIB { "met" } else { "not met" }
            );
            Ok(())
        },
    );
    suite.check(
        &format!("idle memory: RSS per idle kTLS connection, HTTP/2 ({N} connections)"),
        || {
            let kib = per_connection(bin, work, |_| {
                let mut tls = connect(IDLE_GATEWAY, h2cfg)?;
                // The preface and an empty SETTINGS: the connection is
                // served and then idles in h2's accept.
                let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                tls.write_all(&hello).map_err(|e| e.to_string())?;
                tls.flush().map_err(|e| e.to_string())?;
                Ok(tls)
            })?;
            println!(
                "  RSS per idle kTLS HTTP/2 connection: {kib:.1} KiB (goal <= {GOAL_KIB} KiB: {})",
                if kib <= GOAL_KIB { "met" } else { "not met" }
            );
            Ok(())
        },
    );
}
