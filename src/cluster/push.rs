//! `portcullis config push|get|diff`: the operator's side of the cluster.
//! A push validates FILE exactly as `check` does (plus the cluster's rules:
//! no node-only sections, every file beside the config) and writes the
//! config and every file it names in ONE etcd transaction, so nodes see one
//! revision with all of it or none of it.

use std::path::Path;

use super::etcd::Client;
use super::store::{Tree, CONFIG_KEY, FILES};
use super::wire;
use crate::config::NodeBootstrap;

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new revision holding the config.
    Revision {
        revision: i64,
        keys: usize,
        deleted: usize,
    },
    /// The cluster already serves exactly this.
    Unchanged { revision: i64 },
}

/// Validates `file` and writes it under the prefix in one transaction.
pub fn push(bootstrap: &NodeBootstrap, file: &Path) -> Result<Pushed, String> {
    let (tree, _) = Tree::from_config_file(file)?;
    let prefix = &bootstrap.cluster.prefix;
    let mut client = Client::new(&bootstrap.cluster)?;
    let current = client.range(prefix, None).map_err(|e| e.to_string())?;
    if Tree::from_kvs(prefix, &current.kvs) == tree {
        return Ok(Pushed::Unchanged {
            revision: current.revision,
        });
    }
    let puts = tree.keys_under(prefix);
    let deletes: Vec<String> = current
        .kvs
        .iter()
        .map(|kv| kv.key.clone())
        .filter(|k| !puts.iter().any(|(p, _)| p == k))
        .collect();
    let txn = wire::replace_txn(prefix, current.revision, &puts, &deletes);
    let (ok, revision) = client.txn(&txn).map_err(|e| e.to_string())?;
    if !ok {
        return Err(format!(
            "the cluster config changed while pushing (someone else pushed after revision {}); nothing was written: push again",
            current.revision
        ));
    }
    Ok(Pushed::Revision {
        revision,
        keys: puts.len(),
        deleted: deletes.len(),
    })
}

/// What the cluster serves: its revision and keys.
pub fn get(bootstrap: &NodeBootstrap) -> Result<(i64, Tree), String> {
    let prefix = &bootstrap.cluster.prefix;
    let mut client = Client::new(&bootstrap.cluster)?;
    let r = client.range(prefix, None).map_err(|e| e.to_string())?;
    Ok((r.revision, Tree::from_kvs(prefix, &r.kvs)))
}

/// The differences between what the cluster holds (`old`) and `new`, for
/// people: the config as a line diff, files as added/removed/changed with
/// their SHA-256 (never their content: some are private keys). Empty =
/// identical.
pub fn diff(old: &Tree, new: &Tree) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let old_cfg = old.entries.get(CONFIG_KEY).unwrap_or(&empty);
    let new_cfg = new.entries.get(CONFIG_KEY).unwrap_or(&empty);
    if old_cfg != new_cfg {
        out.push_str(&format!(
            "--- cluster/{CONFIG_KEY}\n+++ file/{CONFIG_KEY}\n"
        ));
        out.push_str(&line_diff(
            &String::from_utf8_lossy(old_cfg),
            &String::from_utf8_lossy(new_cfg),
        ));
    }
    let keys: std::collections::BTreeSet<&String> =
        old.entries.keys().chain(new.entries.keys()).collect();
    for key in keys {
        let Some(name) = key.strip_prefix(FILES) else {
            continue;
        };
        match (old.entries.get(key), new.entries.get(key)) {
            (None, Some(v)) => out.push_str(&format!("added   {name} (sha256 {})\n", sha256(v))),
            (Some(v), None) => out.push_str(&format!("removed {name} (sha256 {})\n", sha256(v))),
            (Some(a), Some(b)) if a != b => out.push_str(&format!(
                "changed {name} (sha256 {} -> {})\n",
                sha256(a),
                sha256(b)
            )),
            _ => {}
        }
    }
    out
}

fn sha256(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal line diff (longest common subsequence): "-" lines only in
/// `a`, "+" lines only in `b`, unchanged lines left out. Configs are small.
pub fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{}: {}\n", i + 1, a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}: {}\n", j + 1, b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_only_changes() {
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            "-2: b\n+2: B\n+4: d\n"
        );
        assert_eq!(line_diff("same\n", "same\n"), "");
        assert_eq!(line_diff("", "x"), "+1: x\n");
    }

    #[test]
    fn diff_names_files_by_hash_never_content() {
        let t = |pairs: &[(&str, &str)]| Tree {
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        };
        let old = t(&[
            ("config.toml", "x = 1\n"),
            ("files/a.key", "SECRET-A"),
            ("files/gone.pem", "g"),
        ]);
        let new = t(&[
            ("config.toml", "x = 2\n"),
            ("files/a.key", "SECRET-B"),
            ("files/new.pem", "n"),
        ]);
        let d = diff(&old, &new);
        assert!(d.contains("-1: x = 1\n+1: x = 2\n"), "{d}");
        assert!(d.contains("changed a.key (sha256 "), "{d}");
        assert!(d.contains("added   new.pem"), "{d}");
        assert!(d.contains("removed gone.pem"), "{d}");
        assert!(!d.contains("SECRET"), "{d}");
        assert_eq!(diff(&old, &old), "");
    }
}
