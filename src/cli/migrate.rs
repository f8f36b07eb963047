//! `listings migrate`: apply the embedded migrations of the configured backend.

use clap::Args;

use crate::cli::GlobalOpts;
use crate::db::migrations;

#[derive(Debug, Args)]
pub struct Opts {}

pub async fn run(_opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let url = global.database_url();
    let applied = migrations::run_pending(&url, &global.db_settings()).await?;
    if applied.is_empty() {
        println!("No pending migrations ({url}).");
    }
    for name in applied {
        println!("Applied migration {name} ({url}).");
    }
    Ok(())
}
