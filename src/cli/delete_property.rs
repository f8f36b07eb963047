//! `listings delete-property ID`: delete, invalidate.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{CacheOpts, DatabaseOpts, settings};
use crate::services::{self, ServiceError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The property's id
    pub id: i64,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let app = App::connect(settings(&opts.db, &opts.cache)).await?;
    match services::properties::delete_property(&app, opts.id).await {
        Ok(()) => {
            println!("Deleted property {}.", opts.id);
            Ok(())
        }
        Err(ServiceError::NotFound) => anyhow::bail!("property {} not found", opts.id),
        Err(e) => Err(e).context("cannot delete the property"),
    }
}
