//! `listings migrate`: apply the embedded migrations of the configured backend.

use clap::Args;

use crate::cli::DatabaseOpts;
use crate::db::migrations;

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    pub db: DatabaseOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let url = opts.db.url();
    let applied = migrations::run_pending(&url).await?;
    if applied.is_empty() {
        println!("No pending migrations ({url}).");
    }
    for name in applied {
        println!("Applied migration {name} ({url}).");
    }
    Ok(())
}
