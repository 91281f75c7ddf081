//! The shared config as etcd holds it, one key per file under the prefix:
//! `config.toml` (the TOML as pushed) and `files/<path>` for every file it
//! names, by its path relative to the config. Also the local snapshot of the
//! last good one, and the private directory a node writes a revision into to
//! load it exactly as `check` loads a config from disk.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::wire::Kv;
use crate::config::{self, Config, NodeBootstrap};

pub const CONFIG_KEY: &str = "config.toml";
pub const FILES: &str = "files/";

/// Keys relative to the prefix, and their values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<String, Vec<u8>>,
}

impl Tree {
    /// The keys of a range under `prefix` (others cannot be in it).
    pub fn from_kvs(prefix: &str, kvs: &[Kv]) -> Tree {
        let entries = kvs
            .iter()
            .filter_map(|kv| {
                kv.key
                    .strip_prefix(prefix)
                    .map(|k| (k.to_string(), kv.value.clone()))
            })
            .collect();
        Tree { entries }
    }

    /// `portcullis config push`'s view of FILE: validated exactly as `check`
    /// validates it (plus the cluster's rules), with every file it names.
    pub fn from_config_file(path: &Path) -> Result<(Tree, Config), String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let config = config::parse_shared(path, &text).map_err(|e| e.to_string())?;
        let published = crate::metrics::Published::new(1);
        crate::generation::Generation::load(&config, 1, &published)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut entries = BTreeMap::new();
        entries.insert(CONFIG_KEY.to_string(), text.into_bytes());
        for file in config::referenced_files(&config) {
            let rel = config::relative_key(base, &file)
                .ok_or_else(|| format!("{}: outside the config's directory", file.display()))?;
            let data =
                fs::read(&file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            entries.insert(format!("{FILES}{rel}"), data);
        }
        Ok((Tree { entries }, config))
    }

    /// Checks every key names a safe place, then writes the tree into `dir`
    /// (which must exist and be private): `config.toml` and each file at its
    /// relative path. Returns the config's path.
    pub fn materialize(&self, dir: &Path) -> Result<PathBuf, String> {
        if !self.entries.contains_key(CONFIG_KEY) {
            return Err(format!(
                "key {CONFIG_KEY} is missing: nothing was pushed under the prefix"
            ));
        }
        for (key, value) in &self.entries {
            let target = if key == CONFIG_KEY {
                dir.join(CONFIG_KEY)
            } else {
                let rel = key.strip_prefix(FILES).ok_or_else(|| {
                    format!("key {key}: unexpected (expected {CONFIG_KEY} or {FILES}<path>)")
                })?;
                safe_relative(rel)
                    .ok_or_else(|| format!("key {key}: not a plain relative path"))?;
                if rel == CONFIG_KEY {
                    return Err(format!("key {key}: clashes with {CONFIG_KEY}"));
                }
                dir.join(rel)
            };
            if let Some(parent) = target.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            write_private(&target, value)?;
        }
        Ok(dir.join(CONFIG_KEY))
    }

    /// Absolute etcd keys under `prefix`.
    pub fn keys_under(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.entries
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect()
    }
}

/// `rel` split on "/" has only plain names (no "", ".", "..").
fn safe_relative(rel: &str) -> Option<()> {
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
        return None;
    }
    rel.split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..")
        .then_some(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A revision written into a private directory and loaded from there; the
/// directory (private keys included) is removed on drop.
pub struct Built {
    pub config: Config,
    pub dir: BuildDir,
}

/// A private build directory, removed (with the keys in it) on drop.
pub struct BuildDir(PathBuf);

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `tree` beside the snapshot in a private directory and parses it
/// as the node's config (the shared one, validated as `check` does, with the
/// bootstrap's own parts). Errors name the etcd key, e.g.
/// `/portcullis/config.toml:14: route[1].path: ...`.
pub fn build(tree: &Tree, bootstrap: &NodeBootstrap) -> Result<Built, String> {
    let base = bootstrap
        .cluster
        .snapshot
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = base.join(format!(
        ".portcullis-build-{}-{}",
        std::process::id(),
        BUILD_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: cannot create the build directory: {e}", dir.display()))?;
    let guard = BuildDir(dir.clone());
    let prefix = &bootstrap.cluster.prefix;
    let rename = |msg: String| -> String {
        let d = dir.display().to_string();
        msg.replace(
            &format!("{d}/{CONFIG_KEY}"),
            &format!("{prefix}{CONFIG_KEY}"),
        )
        .replace(&format!("{d}/"), &format!("{prefix}{FILES}"))
    };
    let config_path = tree.materialize(&dir).map_err(&rename)?;
    let text =
        fs::read_to_string(&config_path).map_err(|e| format!("{prefix}{CONFIG_KEY}: {e}"))?;
    let shared = config::parse_shared(&config_path, &text).map_err(|e| rename(e.to_string()))?;
    let config = config::apply_node(bootstrap, shared)?;
    Ok(Built { config, dir: guard })
}

/// Rewrites an error from loading a [`Built`] config so it names etcd keys.
pub fn name_keys(built: &Built, prefix: &str, msg: &str) -> String {
    let d = built.dir.0.display().to_string();
    msg.replace(
        &format!("{d}/{CONFIG_KEY}"),
        &format!("{prefix}{CONFIG_KEY}"),
    )
    .replace(&format!("{d}/"), &format!("{prefix}{FILES}"))
}

/// The snapshot file: the last good shared config and its revision.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    prefix: String,
    revision: i64,
    /// Relative key -> base64 value.
    keys: BTreeMap<String, String>,
}

/// Writes the snapshot atomically (temporary file, fsync, rename, fsync of
/// the directory), readable by the owner only: it holds private keys.
pub fn write_snapshot(path: &Path, prefix: &str, revision: i64, tree: &Tree) -> Result<(), String> {
    let file = SnapshotFile {
        format: 1,
        prefix: prefix.to_string(),
        revision,
        keys: tree
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), BASE64.encode(v)))
            .collect(),
    };
    let json = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, &json)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads the snapshot: its revision and tree.
pub fn read_snapshot(path: &Path, prefix: &str) -> Result<(i64, Tree), String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: SnapshotFile = serde_json::from_slice(&data)
        .map_err(|e| format!("{}: not a snapshot: {e}", path.display()))?;
    if file.format != 1 {
        return Err(format!(
            "{}: unknown snapshot format {}",
            path.display(),
            file.format
        ));
    }
    if file.prefix != prefix {
        return Err(format!(
            "{}: a snapshot of prefix {}, not {prefix}",
            path.display(),
            file.prefix
        ));
    }
    let mut entries = BTreeMap::new();
    for (k, v) in file.keys {
        let value = BASE64
            .decode(v)
            .map_err(|e| format!("{}: key {k}: {e}", path.display()))?;
        entries.insert(k, value);
    }
    Ok((file.revision, Tree { entries }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn tree(pairs: &[(&str, &str)]) -> Tree {
        Tree {
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn keys_that_would_escape_are_refused() {
        let d = tmp("escape");
        for bad in [
            "files/../x",
            "files/a//b",
            "files/./a",
            "files/",
            "files/a\\b",
            "other",
            "files/config.toml",
        ] {
            let t = tree(&[("config.toml", "x"), (bad, "y")]);
            let e = t.materialize(&d.join(bad.replace('/', "_"))).unwrap_err();
            assert!(e.contains(&format!("key {bad}")), "{bad}: {e}");
        }
        assert!(tree(&[("files/a.pem", "y")])
            .materialize(&d)
            .unwrap_err()
            .contains("config.toml is missing"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn materialized_files_are_private() {
        let d = tmp("private");
        let t = tree(&[("config.toml", "c"), ("files/certs/server.key", "k")]);
        let p = t.materialize(&d).unwrap();
        assert_eq!(fs::read_to_string(p).unwrap(), "c");
        let key = d.join("certs/server.key");
        assert_eq!(fs::read_to_string(&key).unwrap(), "k");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(d.join("certs")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn snapshot_round_trip_is_0600() {
        let d = tmp("snap");
        let path = d.join("cluster.snapshot");
        let t = tree(&[("config.toml", "c"), ("files/a.key", "\u{0}\u{ff}")]);
        write_snapshot(&path, "/pc/", 42, &t).unwrap();
        write_snapshot(&path, "/pc/", 43, &t).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_snapshot(&path, "/pc/").unwrap(), (43, t));
        assert!(read_snapshot(&path, "/other/")
            .unwrap_err()
            .contains("prefix /pc/"));
        // Only the snapshot is left: no temporary file behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn from_kvs_strips_the_prefix() {
        let kvs = vec![Kv {
            key: "/pc/config.toml".into(),
            value: b"c".to_vec(),
            mod_revision: 3,
        }];
        assert_eq!(Tree::from_kvs("/pc/", &kvs), tree(&[("config.toml", "c")]));
        assert_eq!(
            tree(&[("config.toml", "c")]).keys_under("/pc/"),
            vec![("/pc/config.toml".to_string(), b"c".to_vec())]
        );
    }
}
