//! The Debian package, end to end on this machine: `packaging/deb/build.sh`
//! builds it (from the debug binary the suite has already built, without
//! compression, so it takes a second), its contents and control fields are
//! checked, its unit passes `systemd-analyze verify`, `dpkg -i` installs it
//! (user, files), the installed binary runs with the installed config as
//! the unit runs it (user `portcullis`, /run/portcullis, the unit's
//! capability) and answers 200, `portcullis upgrade` hands it over to a new
//! process, and `dpkg --purge` leaves nothing behind.
//!
//! It installs a system package, so it runs only as root (it says SKIP
//! loudly otherwise) and purges in a drop guard, whatever fails.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn sh(cmd: &mut Command) -> Out {
    run_cmd(cmd, None, Duration::from_secs(120))
}

fn ok(cmd: &mut Command) -> Out {
    let out = sh(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out
}

/// Purges the package and everything the test put beside it, on every exit.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all("/etc/portcullis/tls");
        let _ = Command::new("dpkg")
            .args(["--purge", "portcullis"])
            .output();
        let _ = std::fs::remove_dir_all("/run/portcullis");
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_debian_package_builds_installs_serves_upgrades_and_purges_cleanly() {
    if !root() || !have("dpkg-deb") || !have("setpriv") {
        eprintln!(
            "\n*** SKIP tests/package.rs: installing the .deb needs root, dpkg-deb and setpriv \
             (root: {}, dpkg-deb: {}, setpriv: {}) ***\n",
            root(),
            have("dpkg-deb"),
            have("setpriv")
        );
        return;
    }
    if sh(Command::new("dpkg").args(["-s", "portcullis"])).code() == Some(0) {
        panic!("a portcullis package is already installed here; this test would replace and purge it: remove it first");
    }
    let td = TempDir::new("package");
    let out = ok(Command::new(repo().join("packaging/deb/build.sh"))
        .arg("--binary")
        .arg(bin())
        .arg("--out")
        .arg(td.path())
        .arg("--fast"));
    let deb = PathBuf::from(out.stdout_str().lines().last().unwrap_or_default().trim());
    let name = deb.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("portcullis_") && name.ends_with(".deb"),
        "{name}"
    );

    // Contents and control fields.
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout_str();
    for (path, mode) in [
        ("./usr/bin/portcullis", "-rwxr-xr-x root/root"),
        (
            "./lib/systemd/system/portcullis.service",
            "-rw-r--r-- root/root",
        ),
        ("./etc/portcullis/portcullis.toml", "-rw-r--r-- root/root"),
        (
            "./usr/lib/sysctl.d/99-portcullis.conf",
            "-rw-r--r-- root/root",
        ),
        (
            "./usr/lib/modules-load.d/portcullis-tls.conf",
            "-rw-r--r-- root/root",
        ),
        (
            "./usr/share/man/man8/portcullis.8.gz",
            "-rw-r--r-- root/root",
        ),
        (
            "./usr/share/doc/portcullis/copyright",
            "-rw-r--r-- root/root",
        ),
    ] {
        let line = contents.lines().find(|l| l.ends_with(&format!(" {path}")));
        let line = line.unwrap_or_else(|| panic!("{path} missing from the package:\n{contents}"));
        assert!(line.starts_with(mode), "{line}");
    }
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb)).stdout_str();
    for field in [
        "Package: portcullis",
        "Depends: libc6",
        "adduser",
        "conffiles",
        "postinst",
        "postrm",
        "prerm",
    ] {
        assert!(info.contains(field), "{field} not in dpkg-deb -I:\n{info}");
    }
    let package_field =
        ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package")).stdout_str();
    assert_eq!(package_field.trim(), "portcullis");
    let ctrl = td.join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles")).unwrap(),
        "/etc/portcullis/portcullis.toml\n"
    );
    // The man page is the binary's --help.
    let man = ok(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/share/man/man8/portcullis.8.gz | gzip -d",
        deb.display()
    )))
    .stdout_str();
    for needle in [
        "portcullis upgrade --config FILE",
        "--takeover SOCKET",
        "/etc/portcullis/portcullis.toml",
    ] {
        assert!(man.contains(needle), "{needle} not in the man page");
    }

    let _purge = Purge;
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    ok(Command::new("getent").args(["passwd", "portcullis"]));
    ok(Command::new("getent").args(["group", "portcullis"]));
    let version = ok(Command::new("/usr/bin/portcullis").arg("--version")).stdout_str();
    assert!(version.starts_with("portcullis "), "{version}");

    // The unit as systemd would read it (offline: no systemd needed).
    if have("systemd-analyze") {
        let out = sh(Command::new("systemd-analyze")
            .arg("verify")
            .arg("/lib/systemd/system/portcullis.service"));
        let complaints: Vec<&str> = out
            .stderr
            .lines()
            // `man` may be absent or without its index on a build machine.
            .filter(|l| !l.contains("Command 'man portcullis(8)' failed"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            complaints.is_empty(),
            "systemd-analyze verify:\n{}",
            out.stderr
        );
    } else {
        eprintln!("systemd-analyze not installed: the unit was not verified");
    }
    let under_systemd = Path::new("/run/systemd/system").is_dir();
    eprintln!(
        "systemd is {}PID 1 here: the installed binary is started directly, as the unit starts it",
        if under_systemd { "" } else { "not " }
    );

    // The operator's part: certificates, the backend, free ports.
    let tls = Path::new("/etc/portcullis/tls");
    ok(portcullis().args(["certs", "init", "--out"]).arg(tls));
    ok(Command::new("chgrp").arg("-R").arg("portcullis").arg(tls));
    ok(Command::new("chmod").args(["-R", "g+rX"]).arg(tls));
    let echo = Echo::start(&td);
    let (port, admin) = (free_port(), free_port());
    let conf = Path::new("/etc/portcullis/portcullis.toml");
    let text = std::fs::read_to_string(conf).unwrap();
    for needle in [
        "0.0.0.0:8443",
        "127.0.0.1:9901",
        "127.0.0.1:8080",
        "upgrade_socket = \"/run/portcullis/upgrade.sock\"",
    ] {
        assert!(text.contains(needle), "the default config lost {needle}");
    }
    let text = text
        .replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8080", &echo.addr());
    std::fs::write(conf, text).unwrap();

    // As the unit runs it: RuntimeDirectory=, User=, the one capability.
    ok(Command::new("install").args([
        "-d",
        "-o",
        "portcullis",
        "-g",
        "portcullis",
        "-m",
        "0750",
        "/run/portcullis",
    ]));
    let as_unit = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=portcullis",
            "--regid=portcullis",
            "--init-groups",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--no-new-privs",
            "/usr/bin/portcullis",
        ])
        .args(args);
        c
    };
    ok(&mut as_unit(&[
        "check",
        "--config",
        "/etc/portcullis/portcullis.toml",
    ]));
    let mut gw = ChildGuard::spawn(
        "installed",
        as_unit(&["run", "--config", "/etc/portcullis/portcullis.toml"]),
        td.path(),
    );
    let addr = sockaddr(&format!("127.0.0.1:{port}"));
    wait_accept(addr, &mut gw);
    let curl_tls = |path: &str| {
        run_cmd(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
                .arg(format!("localhost:{port}:127.0.0.1"))
                .arg("--cacert")
                .arg(tls.join("ca.pem"))
                .arg("--cert")
                .arg(tls.join("client.pem"))
                .arg("--key")
                .arg(tls.join("client.key"))
                .arg(format!("https://localhost:{port}{path}")),
            None,
            Duration::from_secs(20),
        )
        .stdout_str()
    };
    assert_eq!(curl_tls("/installed"), "200", "{}", gw.stderr());
    let health = sh(Command::new("curl")
        .arg("-s")
        .arg(format!("http://127.0.0.1:{admin}/healthz")));
    assert_eq!(health.stdout_str().trim(), "ok");
    let pid_file = Path::new("/run/portcullis/portcullis.pid");
    assert_eq!(
        std::fs::read_to_string(pid_file).unwrap().trim(),
        gw.pid().to_string()
    );

    // The documented upgrade (what postinst runs under systemd): the running
    // gateway starts /usr/bin/portcullis, which takes its sockets over.
    let out = ok(Command::new("/usr/bin/portcullis").args([
        "upgrade",
        "--config",
        "/etc/portcullis/portcullis.toml",
    ]));
    assert!(out.stdout_str().contains("upgraded:"), "{}", out.describe());
    assert!(gw
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    let new_pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _kill_new = KillOnDrop(new_pid);
    assert_eq!(curl_tls("/after-upgrade"), "200", "{}", gw.stderr());
    let owner = std::fs::read_to_string(format!("/proc/{new_pid}/status")).unwrap();
    let uid_line = owner
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let uid = ok(Command::new("id").args(["-u", "portcullis"])).stdout_str();
    assert!(
        uid_line.contains(uid.trim()),
        "the new process runs as portcullis: {uid_line}"
    );
    // SAFETY: kill(2) takes two integers and touches none of our memory.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    assert!(wait_until(Duration::from_secs(15), || !Path::new(
        &format!("/proc/{new_pid}")
    )
    .exists()
        || std::fs::read_to_string(format!("/proc/{new_pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)));

    // Purge: the operator's certificates first (postrm keeps a non-empty /etc/portcullis).
    std::fs::remove_dir_all(tls).unwrap();
    ok(Command::new("dpkg").args(["--purge", "portcullis"]));
    for gone in [
        "/usr/bin/portcullis",
        "/etc/portcullis",
        "/lib/systemd/system/portcullis.service",
        "/usr/lib/sysctl.d/99-portcullis.conf",
        "/usr/lib/modules-load.d/portcullis-tls.conf",
        "/usr/share/man/man8/portcullis.8.gz",
        "/usr/share/doc/portcullis",
        "/run/portcullis",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is left after dpkg --purge"
        );
    }
    assert_ne!(
        sh(Command::new("getent").args(["passwd", "portcullis"])).code(),
        Some(0),
        "user left"
    );
    assert_ne!(
        sh(Command::new("getent").args(["group", "portcullis"])).code(),
        Some(0),
        "group left"
    );
    assert_ne!(
        sh(Command::new("dpkg").args(["-s", "portcullis"])).code(),
        Some(0)
    );
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes two integers and touches none of our memory.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}
