//! `listings migrate`: apply the embedded migrations of the configured backend, or with
//! `--status` list each as applied or pending without changing anything.

use clap::Args;

use crate::cli::GlobalOpts;
use crate::service::migrations;

#[derive(Debug, Args)]
pub struct Opts {
    /// List each migration as applied or pending, and change nothing
    #[arg(long)]
    pub status: bool,
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
    let applied = migrations::run_pending(&url, &global.db_settings()).await?;
    if applied.is_empty() {
        println!("No pending migrations ({url}).");
    }
    for name in applied {
        println!("Applied migration {name} ({url}).");
    }
    Ok(())
}
