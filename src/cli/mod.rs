//! Command line: the dispatch, the flag parser and how failures exit. Each
//! command lives in its own file: `run`, `echo`, `certs`, `check` (also
//! `reload`'s validation), `reload`, `upgrade`; `doctor` is in `crate::doctor`.

mod certs;
mod certs_status;
mod check;
mod cluster;
mod echo;
mod reload;
mod run;
mod upgrade;

use certs::cmd_certs;
use check::cmd_check;
use cluster::cmd_config;
use echo::cmd_echo;
use reload::cmd_reload;
use run::cmd_run;
use upgrade::cmd_upgrade;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::certs::{CrlOptions, InitOptions, KeyType, LeafKind, LeafOptions};
use crate::config::{self, Config, DriverChoice, LogFormat};
use crate::{gateway, logging, runtime};

const USAGE: &str = "\
portcullis: thread-per-core mTLS API gateway

USAGE:
  portcullis run [--config FILE] [--listen ADDR]... [--takeover SOCKET]
      FILE with [cluster]: a node whose config comes from etcd (and the local snapshot).
      With no --config: generate dev certificates once (in $PORTCULLIS_HOME/dev,
      default ~/.local/share/portcullis/dev), start the built-in echo backend,
      listen on 127.0.0.1:8443 and [::1]:8443 (or each --listen), and print a
      curl command that works.
      --takeover SOCKET: take the listening sockets over from the gateway serving
      that upgrade socket (its server.upgrade_socket); it drains and exits once
      this process accepts. Exits 1 if it cannot (the running gateway is unaffected).
  portcullis echo --listen ADDR [--workers N] [--tls-cert PEM --tls-key PEM [--client-ca PEM]]
      The built-in echo backend (plain HTTP/1.1; over TLS with --tls-cert, demanding a
      client certificate from --client-ca when given).
  portcullis certs init --out DIR [--server-name NAME]... [--client-cn CN]
      [--key-type ecdsa-p256|ecdsa-p384|rsa-2048|ed25519] [--p12-password PW] [--days N] [--force]
      A dev CA, a server certificate and a client certificate (PEM, plus a .p12 of each).
  portcullis certs issue --ca-dir DIR --out DIR --stem NAME --cn CN [--server] [--dns NAME]...
      [--uri URI]... [--expired] [--key-type T] [--p12-password PW] [--days N] [--count N]
      One more certificate signed by the CA in --ca-dir (client unless --server), as
      NAME.pem, NAME.key and NAME.p12. --uri adds a URI SAN, e.g. a SPIFFE ID.
      --count N: N certificates at once, NAME-00001.pem/.key ... (CN-00001 ...), no .p12
      (many distinct clients for a load test: pcl-load --client-certs DIR).
  portcullis certs crl --ca-dir DIR --out FILE [--revoke CERT.pem]... [--days N]
      A PEM CRL signed by the CA in --ca-dir, revoking each --revoke certificate
      (none: an empty CRL). Valid for N days (default 30).
  portcullis certs status [--config FILE]
      Every certificate the config holds (site, listener, client CA, upstream CA and
      client identity) and every CRL, with notAfter / nextUpdate and days left. Exit
      status 1 when one has expired (or a CRL is past its nextUpdate), 2 when the config
      or a file cannot be read. No --config: the dev config `run` generates.
  portcullis check --config FILE
      Validate a config file (certificates, keys, CRLs included) and explain what it will do.
  portcullis reload --config FILE [--pid PID]
      Validate FILE, then ask the running gateway (server.pid_file, or --pid) to reload
      it (SIGHUP): new connections get the new config, open ones finish on theirs.
  portcullis upgrade --config FILE [--pid PID] [--timeout SECONDS]
      Validate FILE, then ask the running gateway (server.pid_file, or --pid) to start
      the binary now installed at its path (SIGUSR2), which takes its sockets over
      (server.upgrade_socket); waits until the new process serves and the old exited.
  portcullis config push --cluster NODE.toml FILE
      Validate FILE exactly as check does, then write it and every file it names to etcd
      (the [cluster] of NODE.toml) in one transaction: every node applies it.
  portcullis config get --cluster NODE.toml [--out DIR]
      What the cluster serves (the config; with --out, it and its files in DIR).
  portcullis config diff --cluster NODE.toml FILE
      How FILE differs from what the cluster serves (exit 1 if it does).
  portcullis doctor [--config FILE]
      Check this host (io_uring, kernel TLS, limits, somaxconn, cores) and say how to fix what is missing.

ENVIRONMENT:
  PORTCULLIS_DRIVER=io_uring|epoll|auto   overrides server.driver
  PORTCULLIS_LOG=<filter>                 overrides server.log_level (e.g. debug)
  PORTCULLIS_KEEP_REP_MOVSB=1             run and echo: keep glibc's rep movsb copies on AMD CPUs
                                          (by default they run again with it off; see README)
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
    if matches!(cmd, "run" | "echo") {
        // The commands that move bulk data; returns only when no re-execution
        // was needed (or it failed).
        crate::copy_tuning::reexec_if_needed();
    }
    let result = match cmd {
        "run" => cmd_run(rest),
        "echo" => cmd_echo(rest),
        "certs" => cmd_certs(rest),
        "check" => cmd_check(rest),
        "reload" => cmd_reload(rest),
        "upgrade" => cmd_upgrade(rest),
        "config" => cmd_config(rest),
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

pub(super) enum Failure {
    Usage(String),
    Config(String),
    Runtime(String),
}

/// Minimal flag parser: `--name value` pairs, repeatable, plus boolean flags.
pub(super) struct Flags {
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

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, Failure> {
    s.parse().map_err(|_| {
        Failure::Usage(format!(
            "{s:?} is not a socket address (like 127.0.0.1:8443 or [::1]:8443)"
        ))
    })
}
