//! `portcullis certs status [--config FILE]`: every certificate and CRL the
//! config holds, as a table with days left; exit status 1 when one has
//! expired (a CRL: is past its nextUpdate), so a cron job or a monitoring
//! check can run it as is.

use super::*;

pub(super) fn cmd_status(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config"])?;
    let path = match flags.one("--config") {
        Some(p) => PathBuf::from(p),
        None => {
            let dev = super::run::dev_dir().join("portcullis.toml");
            if !dev.exists() {
                return Err(Failure::Usage(format!(
                    "--config FILE is required (there is no dev config at {})",
                    dev.display()
                )));
            }
            dev
        }
    };
    let cfg = config::load(&path).map_err(|e| Failure::Config(e.to_string()))?;
    let (inventory, problems) = crate::lifecycle::inventory::collect(&cfg);
    let now = crate::expiry::now_unix();
    let warn = cfg.tls.warn_expiry;
    print!("{}", inventory.table(now, warn));
    let concerns = inventory.concerns(now, warn);
    let expired = concerns
        .iter()
        .filter(|c| c.standing == crate::expiry::Standing::Expired)
        .count();
    println!(
        "{} certificates, {} CRLs; {expired} expired, {} expiring within warn_expiry ({})",
        inventory.certs.len(),
        inventory.crls.len(),
        concerns.len() - expired,
        crate::expiry::duration_text(warn)
    );
    for c in &concerns {
        println!("  {}", c.message);
    }
    if !problems.is_empty() {
        return Err(Failure::Config(format!(
            "cannot read everything the config names:\n  {}",
            problems.join("\n  ")
        )));
    }
    if expired > 0 {
        return Err(Failure::Runtime(format!(
            "{expired} certificate{} or CRL{} expired",
            if expired == 1 { "" } else { "s" },
            if expired == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
