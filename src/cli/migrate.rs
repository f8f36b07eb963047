//! `listings migrate`: apply the embedded migrations of the configured backend (and, with
//! `--rekey`, recompute the stored text keys), or with
//! `--status` list each as applied or pending without changing anything.

use clap::Args;

use crate::cli::GlobalOpts;
use crate::service::migrations;

#[derive(Debug, Args)]
pub struct Opts {
    /// List each migration as applied or pending, and change nothing
    #[arg(long, conflicts_with = "rekey")]
    pub status: bool,
    /// Also recompute every listing's text keys (what location and search filters
    /// compare) by this version's rule, where they differ: rows written by other
    /// programs got their database's lower() instead
    #[arg(long)]
    pub rekey: bool,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let url = global.database_url();
    if opts.status {
        let all = migrations::status(&url, &global.db_settings()).await?;
        for migration in &all {
            let state = if migration.applied {
                "applied"
            } else {
                "pending"
            };
            println!("{state}  {}", migration.name);
        }
        let applied = all.iter().filter(|m| m.applied).count();
        println!(
            "{applied} applied, {} pending ({url}).",
            all.len() - applied
        );
        return Ok(());
    }
    let rekey = if opts.rekey {
        migrations::Rekey::All
    } else {
        migrations::Rekey::IfPending
    };
    let migrated = migrations::migrate(&url, &global.db_settings(), rekey).await?;
    if migrated.applied.is_empty() {
        println!("No pending migrations ({url}).");
    }
    for name in migrated.applied {
        println!("Applied migration {name} ({url}).");
    }
    if let Some(rows) = migrated.rekeyed {
        println!("Recomputed the text keys of {rows} listing(s) ({url}).");
    }
    Ok(())
}
