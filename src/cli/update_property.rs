//! `listings update-property ID`: change the given fields, invalidate, print the result.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{CacheOpts, DatabaseOpts, PropertyFieldOpts, settings};
use crate::domain::PropertyChanges;
use crate::services::{self, ServiceError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The property's id
    pub id: i64,
    #[command(flatten)]
    pub fields: PropertyFieldOpts,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let changes = PropertyChanges::parse(opts.fields.input()).context("invalid changes")?;
    let app = App::connect(settings(&opts.db, &opts.cache)).await?;
    match services::properties::update_property(&app, opts.id, &changes).await {
        Ok(updated) => {
            println!("{}", serde_json::to_string(&updated)?);
            Ok(())
        }
        Err(ServiceError::NotFound) => anyhow::bail!("property {} not found", opts.id),
        Err(e) => Err(e).context("cannot update the property"),
    }
}
