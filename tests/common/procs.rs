//! Child processes: run a command to completion under a deadline
//! (`run_cmd`, `Out`), or keep one running for a test's lifetime
//! (`ChildGuard`: killed and reaped on drop, its stdout and stderr in files
//! whose tails are printed when the test fails), and wait for one to accept
//! connections (`wait_accept`). The gateway, the echo backend and every
//! command-line client start through here.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{strip_ansi, unique, wait_until};

/// Output of a finished command.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_str(),
            self.stderr
        )
    }
}

/// Runs a command to completion with a deadline (killed and panicking past
/// it). stdout/stderr are captured; `stdin` bytes are written then closed.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let desc = format!("{:?}", cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let stdin_thread = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().unwrap();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
            // dropping the pipe closes the child's stdin
        })
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("wait {desc}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    if let Some(t) = stdin_thread {
        let _ = t.join();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Out {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "command timed out after {:?}: {desc}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            timeout,
            String::from_utf8_lossy(&stdout),
            stderr
        ),
    }
}

/// A long-running child process, SIGKILLed and reaped on drop. Its stdout and
/// stderr go to files whose tails are printed if the test is panicking.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout/stderr redirected to files in `dir`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> ChildGuard {
        let n = unique();
        let stdout_path = dir.join(format!("{name}-{n}.stdout"));
        let stderr_path = dir.join(format!("{name}-{n}.stderr"));
        let out = File::create(&stdout_path).unwrap();
        let err = File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stdout_path,
            stderr_path,
            exit: None,
        }
    }

    /// Like `spawn`, but stdout is also delivered line by line on a channel
    /// (and still copied to the stdout file).
    pub fn spawn_lines(
        name: &str,
        mut cmd: Command,
        dir: &Path,
    ) -> (ChildGuard, mpsc::Receiver<String>) {
        let n = unique();
        let stdout_path = dir.join(format!("{name}-{n}.stdout"));
        let stderr_path = dir.join(format!("{name}-{n}.stderr"));
        let mut out = File::create(&stdout_path).unwrap();
        let err = File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let pipe = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                let _ = tx.send(line);
            }
        });
        (
            ChildGuard {
                name: name.to_string(),
                child: Some(child),
                stdout_path,
                stderr_path,
                exit: None,
            },
            rx,
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        assert!(pid > 0, "{}: no child to signal", self.name);
        // SAFETY: kill(2) takes two integers and touches none of our memory;
        // a pid or signal it rejects is an error return, asserted below.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM)
    }

    /// Exit status if the child has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default())
    }

    pub fn stdout(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stdout_path).unwrap_or_default())
    }

    /// stdout + stderr, for assertions that do not care which stream.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout(), self.stderr())
    }

    /// Polls the stderr file until a line contains every needle.
    pub fn wait_log_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = find_line(&self.stderr(), needles);
            found.is_some()
        });
        found
    }

    /// Number of stderr lines containing every needle.
    pub fn count_log_lines(&self, needles: &[&str]) -> usize {
        self.stderr()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(|s| s.to_string())
            .collect()
    }

    fn tail(path: &Path) -> String {
        let s = strip_ansi(&fs::read_to_string(path).unwrap_or_default());
        let n = s.len();
        if n > 6000 {
            let mut i = n - 6000;
            while !s.is_char_boundary(i) {
                i += 1;
            }
            format!("...{}", &s[i..])
        } else {
            s
        }
    }

    /// Panics with the child's logs.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            Self::tail(&self.stdout_path),
            self.name,
            Self::tail(&self.stderr_path)
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.exit.is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- [{}] stdout tail ---\n{}\n--- [{}] stderr tail ---\n{}",
                self.name,
                Self::tail(&self.stdout_path),
                self.name,
                Self::tail(&self.stderr_path)
            );
        }
    }
}

pub fn find_line(text: &str, needles: &[&str]) -> Option<String> {
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(|s| s.to_string())
}

/// Waits until `addr` accepts a TCP connection (poll every 20 ms, up to 10 s),
/// failing with the child's logs if it exits first.
pub fn wait_accept(addr: SocketAddr, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_exit() {
            child.fail(&format!(
                "{} exited ({st}) before accepting on {addr}",
                child.name
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            child.fail(&format!(
                "{} did not accept on {addr} within 10 s",
                child.name
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
