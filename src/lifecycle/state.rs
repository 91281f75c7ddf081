//! The state directory (`[state] dir`): the last good copy of each
//! `crl_urls` CRL, named after its URL and replaced atomically (written to a
//! temporary file in the same directory, synced, renamed over the old one),
//! so a crash or a full disk never leaves half a CRL where the gateway reads.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::CrlUrl;

/// `DIR/crl-<16 hex of SHA-256 of the URL>.crl`: stable across restarts,
/// distinct per URL, and nothing of the URL's text reaches the file system.
pub fn crl_copy_path(dir: &Path, url: &CrlUrl) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.text.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("crl-{hex}.crl"))
}

/// Replaces `path` with `data` so that a reader sees the old file or the new
/// one, never a mix.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_are_per_url_and_stable() {
        let dir = Path::new("/var/lib/p");
        let a = CrlUrl::parse("http://ca/a.crl").unwrap();
        let b = CrlUrl::parse("http://ca/b.crl").unwrap();
        let pa = crl_copy_path(dir, &a);
        assert_eq!(pa, crl_copy_path(dir, &a));
        assert_ne!(pa, crl_copy_path(dir, &b));
        let name = pa.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("crl-") && name.ends_with(".crl") && name.len() == 24,
            "{name}"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("pcs-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.crl");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
