//! `portcullis config push|get|diff --cluster NODE.toml`: what the cluster
//! serves, and changing it (see `crate::cluster::push`).

use super::*;
use crate::cluster::push::{self, Pushed};
use crate::cluster::store::{Tree, CONFIG_KEY, FILES};

pub(super) fn cmd_config(args: &[String]) -> Result<(), Failure> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Failure::Usage("config needs push, get or diff".into()));
    };
    // One positional FILE (push, diff); the rest are flags.
    let mut positional = Vec::new();
    let mut flag_args = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a.starts_with("--") {
            flag_args.push(a.clone());
            if !a.contains('=') {
                if let Some(v) = it.next() {
                    flag_args.push(v.clone());
                }
            }
        } else {
            positional.push(a.clone());
        }
    }
    let flags = Flags::parse(&flag_args, &[], &["--cluster", "--out"])?;
    let bootstrap_path = flags.required("--cluster")?;
    let bootstrap = config::load_bootstrap(Path::new(bootstrap_path))
        .map_err(|e| Failure::Config(e.to_string()))?;
    let file = |what: &str| -> Result<PathBuf, Failure> {
        match positional.as_slice() {
            [f] => Ok(PathBuf::from(f)),
            _ => Err(Failure::Usage(format!(
                "config {what} needs exactly one FILE"
            ))),
        }
    };
    match sub.as_str() {
        "push" => {
            let file = file("push")?;
            // A refusal before anything reached etcd is the config's fault (exit 2).
            let (tree, _) = Tree::from_config_file(&file).map_err(Failure::Config)?;
            match push::push(&bootstrap, &file).map_err(Failure::Runtime)? {
                Pushed::Revision {
                    revision,
                    keys,
                    deleted,
                } => println!(
                    "{}: pushed to {} as revision {revision} ({keys} keys written, {deleted} removed, one transaction)",
                    file.display(),
                    bootstrap.cluster.prefix
                ),
                Pushed::Unchanged { revision } => println!(
                    "{}: the cluster already serves exactly this (revision {revision}); nothing pushed",
                    file.display()
                ),
            }
            drop(tree);
            Ok(())
        }
        "get" => {
            if !positional.is_empty() {
                return Err(Failure::Usage(
                    "config get takes no FILE (use --out DIR)".into(),
                ));
            }
            let (revision, tree) = push::get(&bootstrap).map_err(Failure::Runtime)?;
            match flags.one("--out") {
                Some(dir) => {
                    let dir = Path::new(dir);
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
                    tree.materialize(dir).map_err(Failure::Runtime)?;
                    println!(
                        "revision {revision}: {} keys written to {} (files 0600)",
                        tree.entries.len(),
                        dir.display()
                    );
                }
                None => {
                    println!("# {} at revision {revision}", bootstrap.cluster.prefix);
                    for key in tree.entries.keys().filter(|k| k.starts_with(FILES)) {
                        println!("# file {key}");
                    }
                    match tree.entries.get(CONFIG_KEY) {
                        Some(c) => print!("{}", String::from_utf8_lossy(c)),
                        None => println!("# (no {CONFIG_KEY}: nothing pushed yet)"),
                    }
                }
            }
            Ok(())
        }
        "diff" => {
            let file = file("diff")?;
            let (new, _) = Tree::from_config_file(&file).map_err(Failure::Config)?;
            let (revision, old) = push::get(&bootstrap).map_err(Failure::Runtime)?;
            let d = push::diff(&old, &new);
            if d.is_empty() {
                println!(
                    "{}: the cluster serves exactly this (revision {revision})",
                    file.display()
                );
                return Ok(());
            }
            print!("{d}");
            Err(Failure::Runtime(format!(
                "{} differs from what the cluster serves (revision {revision})",
                file.display()
            )))
        }
        other => Err(Failure::Usage(format!(
            "unknown config command {other:?} (push, get, diff)"
        ))),
    }
}
