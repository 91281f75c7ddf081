//! `portcullis certs init|issue|crl`: the development PKI (`certs status`
//! is in `certs_status`).

use super::*;

pub(super) fn cmd_certs(args: &[String]) -> Result<(), Failure> {
    let (sub, rest) = args
        .split_first()
        .ok_or_else(|| Failure::Usage("certs needs `init`, `issue`, `crl` or `status`".into()))?;
    let key_type = |flags: &Flags| -> Result<KeyType, Failure> {
        flags
            .one("--key-type")
            .unwrap_or("ecdsa-p256")
            .parse()
            .map_err(|e| Failure::Usage(format!("--key-type: {e}")))
    };
    let days_or = |flags: &Flags, default: u32| -> Result<u32, Failure> {
        match flags.one("--days") {
            Some(d) => d
                .parse()
                .map_err(|_| Failure::Usage(format!("--days {d:?}: expected a number"))),
            None => Ok(default),
        }
    };
    let days = |flags: &Flags| days_or(flags, 825);
    match sub.as_str() {
        "init" => {
            let flags = Flags::parse(
                rest,
                &["--force"],
                &[
                    "--out",
                    "--server-name",
                    "--client-cn",
                    "--key-type",
                    "--p12-password",
                    "--days",
                ],
            )?;
            let mut names = flags.all("--server-name");
            if names.is_empty() {
                names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            }
            let opts = InitOptions {
                out_dir: PathBuf::from(flags.required("--out")?),
                server_names: names,
                client_cn: flags
                    .one("--client-cn")
                    .unwrap_or("portcullis-dev-client")
                    .to_string(),
                key_type: key_type(&flags)?,
                p12_password: flags
                    .one("--p12-password")
                    .unwrap_or("portcullis")
                    .to_string(),
                days: days(&flags)?,
                force: flags.has("--force"),
            };
            let generated =
                crate::certs::init(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            let dir = opts.out_dir.display();
            if generated {
                println!("wrote {dir}/{{ca.pem,ca.key,server.pem,server.key,server.p12,client.pem,client.key,client.p12}}");
            } else {
                println!("{dir} already holds a CA and certificates; left them as they are (--force to replace)");
            }
            Ok(())
        }
        "issue" => {
            let flags = Flags::parse(
                rest,
                &["--server", "--expired"],
                &[
                    "--ca-dir",
                    "--out",
                    "--stem",
                    "--cn",
                    "--dns",
                    "--uri",
                    "--key-type",
                    "--p12-password",
                    "--days",
                    "--count",
                ],
            )?;
            let opts = LeafOptions {
                ca_dir: PathBuf::from(flags.required("--ca-dir")?),
                out_dir: PathBuf::from(flags.required("--out")?),
                stem: flags.required("--stem")?.to_string(),
                common_name: flags.required("--cn")?.to_string(),
                dns_names: flags.all("--dns"),
                uris: flags.all("--uri"),
                key_type: key_type(&flags)?,
                p12_password: flags
                    .one("--p12-password")
                    .unwrap_or("portcullis")
                    .to_string(),
                days: days(&flags)?,
                expired: flags.has("--expired"),
                kind: if flags.has("--server") {
                    LeafKind::Server
                } else {
                    LeafKind::Client
                },
            };
            if let Some(count) = flags.one("--count") {
                // Many distinct clients at once (e.g. for `pcl-load --client-certs`).
                let count: usize = match count.parse() {
                    Ok(n) if (1..=1_000_000).contains(&n) => n,
                    _ => {
                        return Err(Failure::Usage(format!(
                            "--count: expected a number from 1 to 1000000, got {count:?}"
                        )))
                    }
                };
                let stems = crate::certs::issue_batch(&opts, count)
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
                println!(
                    "wrote {count} certificates: {dir}/{first}.pem, .key ... {dir}/{last}.pem, .key",
                    dir = opts.out_dir.display(),
                    first = stems.first().map_or("", String::as_str),
                    last = stems.last().map_or("", String::as_str),
                );
                return Ok(());
            }
            crate::certs::issue(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "wrote {}/{stem}.pem, {stem}.key and {stem}.p12",
                opts.out_dir.display(),
                stem = opts.stem
            );
            Ok(())
        }
        "crl" => {
            let flags = Flags::parse(rest, &[], &["--ca-dir", "--out", "--revoke", "--days"])?;
            let opts = CrlOptions {
                ca_dir: PathBuf::from(flags.required("--ca-dir")?),
                out: PathBuf::from(flags.required("--out")?),
                revoke: flags
                    .all("--revoke")
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                days: days_or(&flags, crate::certs::DEFAULT_CRL_DAYS)?,
            };
            let revoked =
                crate::certs::write_crl(&opts).map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "wrote {} revoking {revoked} certificate{}",
                opts.out.display(),
                if revoked == 1 { "" } else { "s" }
            );
            Ok(())
        }
        "status" => super::certs_status::cmd_status(rest),
        other => Err(Failure::Usage(format!("unknown certs command {other:?}"))),
    }
}
