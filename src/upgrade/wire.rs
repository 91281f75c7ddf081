//! The takeover protocol's messages and the socket plan, as pure functions
//! (no I/O): what the old and the new process say to each other over the
//! upgrade socket, and which worker of the new process accepts on which
//! passed listener.
//!
//! Every message is one line of text in one SOCK_SEQPACKET packet, so a
//! message is never split or merged; a listening socket travels as the one
//! SCM_RIGHTS descriptor of its `listener` or `admin` line. The exchange:
//!
//! ```text
//! new -> old   takeover 1 pid=<new pid>
//! old -> new   sockets 1 pid=<old pid> count=<n>     (or: refused <why>)
//! old -> new   listener <configured> <bound>         n times (admin <bound> once at most), one fd each
//! new -> old   accepting                              (every worker of the new process accepts)
//! old -> new   draining                               (the old process stopped accepting)
//! ```

use std::net::SocketAddr;

/// The protocol version both sides must speak.
pub const VERSION: u32 = 1;
/// Longest message either side sends (a refusal reason is cut to fit).
pub const MAX_MESSAGE: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Takeover {
        version: u32,
        pid: u32,
    },
    Sockets {
        version: u32,
        pid: u32,
        count: usize,
    },
    Refused(String),
    /// A `[[listener]]` socket: the address the old config named (port 0
    /// included, so the new config is matched on what the operator wrote)
    /// and the address it is bound to.
    Listener {
        configured: SocketAddr,
        bound: SocketAddr,
    },
    Admin {
        bound: SocketAddr,
    },
    Accepting,
    Draining,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let line = match self {
            Message::Takeover { version, pid } => format!("takeover {version} pid={pid}"),
            Message::Sockets {
                version,
                pid,
                count,
            } => format!("sockets {version} pid={pid} count={count}"),
            Message::Refused(why) => {
                let mut why: String = why.replace(['\n', '\r'], " ");
                while why.len() > MAX_MESSAGE - 10 {
                    why.pop();
                }
                format!("refused {why}")
            }
            Message::Listener { configured, bound } => format!("listener {configured} {bound}"),
            Message::Admin { bound } => format!("admin {bound}"),
            Message::Accepting => "accepting".into(),
            Message::Draining => "draining".into(),
        };
        let mut out = line.into_bytes();
        out.push(b'\n');
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| "a message that is not UTF-8".to_string())?;
        let Some(line) = text.strip_suffix('\n') else {
            return Err(format!("a message without its line end: {text:?}"));
        };
        if line.contains('\n') {
            return Err(format!("two lines in one message: {line:?}"));
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || format!("a malformed {word:?} message: {line:?}");
        let fields: Vec<&str> = rest.split(' ').filter(|f| !f.is_empty()).collect();
        let version = |s: &str| s.parse::<u32>().map_err(|_| bad());
        let keyed = |s: &str, key: &str| -> Result<u64, String> {
            s.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)
        };
        let addr = |s: &str| s.parse::<SocketAddr>().map_err(|_| bad());
        let pid = |s: &str| keyed(s, "pid").and_then(|p| u32::try_from(p).map_err(|_| bad()));
        match (word, fields.as_slice()) {
            ("takeover", [v, p]) => Ok(Message::Takeover {
                version: version(v)?,
                pid: pid(p)?,
            }),
            ("sockets", [v, p, c]) => Ok(Message::Sockets {
                version: version(v)?,
                pid: pid(p)?,
                count: usize::try_from(keyed(c, "count")?).map_err(|_| bad())?,
            }),
            ("refused", _) => Ok(Message::Refused(rest.to_string())),
            ("listener", [c, b]) => Ok(Message::Listener {
                configured: addr(c)?,
                bound: addr(b)?,
            }),
            ("admin", [b]) => Ok(Message::Admin { bound: addr(b)? }),
            ("accepting", []) => Ok(Message::Accepting),
            ("draining", []) => Ok(Message::Draining),
            _ => Err(bad()),
        }
    }
}

/// Where one worker's socket for one listener comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The passed socket with this index: it shares the old process's
    /// accept queue, so nothing queued there is lost.
    Passed(usize),
    /// A new SO_REUSEPORT socket joining the passed sockets' group (the new
    /// process has more workers than the old had sockets).
    Join,
    /// The old process had no such listener: bind it as a fresh start does.
    Fresh,
}

/// Which sockets each worker of the new process accepts on.
#[derive(Debug, PartialEq, Eq)]
pub struct SocketPlan {
    /// per_worker[w] = (listener index, source) pairs; a worker may hold
    /// several passed sockets of one listener when it has fewer workers.
    pub per_worker: Vec<Vec<(usize, Source)>>,
    /// Passed sockets no listener of the new config names: they are closed
    /// (and their queued connections reset), which the caller logs.
    pub unused: Vec<usize>,
}

/// Maps passed sockets to the new config's listeners (by configured
/// address) and workers. Every passed socket of a kept listener is accepted
/// on by some worker: one left without an acceptor would hold its queued
/// connections until the old process exits, then reset them.
pub fn plan_sockets(passed: &[SocketAddr], listeners: &[SocketAddr], workers: usize) -> SocketPlan {
    let workers = workers.max(1);
    let mut per_worker: Vec<Vec<(usize, Source)>> = vec![Vec::new(); workers];
    let mut used = vec![false; passed.len()];
    for (l, want) in listeners.iter().enumerate() {
        let mine: Vec<usize> = (0..passed.len())
            .filter(|&i| !used[i] && passed[i] == *want)
            .collect();
        for &i in &mine {
            used[i] = true;
        }
        if mine.is_empty() {
            for w in per_worker.iter_mut() {
                w.push((l, Source::Fresh));
            }
            continue;
        }
        for (j, &i) in mine.iter().enumerate() {
            per_worker[j % workers].push((l, Source::Passed(i)));
        }
        for w in per_worker.iter_mut().skip(mine.len()) {
            w.push((l, Source::Join));
        }
    }
    let unused = (0..passed.len()).filter(|&i| !used[i]).collect();
    SocketPlan { per_worker, unused }
}

#[cfg(test)]
mod tests;
