//! Test certificates, made by the product's own `portcullis certs`
//! subcommand (never by a test-only generator, so the tests also exercise
//! what users run): `certs_init` for a CA with a server and a client
//! certificate, `certs_issue` for one more leaf, and `CertDir` to name the
//! files `certs init` writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::portcullis;
use super::procs::run_cmd;

#[derive(Clone, Debug)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn client_p12(&self) -> PathBuf {
        self.dir.join("client.p12")
    }
}

/// `portcullis certs init --out DIR EXTRA...`; asserts success and the files.
pub fn certs_init(out: &Path, extra: &[&str]) -> CertDir {
    let mut cmd = portcullis();
    cmd.arg("certs")
        .arg("init")
        .arg("--out")
        .arg(out)
        .args(extra);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert!(o.status.success(), "certs init failed: {}", o.describe());
    let cd = CertDir {
        dir: out.to_path_buf(),
    };
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "client.p12",
    ] {
        let p = out.join(f);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "certs init did not write {}", p.display());
    }
    cd
}

/// `portcullis certs issue ...`; returns (cert.pem, key).
pub fn certs_issue(
    ca_dir: &Path,
    out: &Path,
    stem: &str,
    cn: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf) {
    let mut cmd = portcullis();
    cmd.arg("certs")
        .arg("issue")
        .arg("--ca-dir")
        .arg(ca_dir)
        .arg("--out")
        .arg(out)
        .arg("--stem")
        .arg(stem)
        .arg("--cn")
        .arg(cn)
        .args(extra);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert!(o.status.success(), "certs issue failed: {}", o.describe());
    let pem = out.join(format!("{stem}.pem"));
    let key = out.join(format!("{stem}.key"));
    assert!(
        pem.exists() && key.exists(),
        "certs issue did not write {stem}.pem/.key in {}",
        out.display()
    );
    (pem, key)
}
