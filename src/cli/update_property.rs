//! `listings update-property ID`: change the given fields, invalidate, print the result.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{CacheOpts, DatabaseOpts, settings};
use crate::domain::{PropertyChanges, PropertyInput};
use crate::services::{self, ServiceError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The property's id
    pub id: i64,
    /// New title, 1 to 200 characters
    #[arg(long)]
    pub title: Option<String>,
    /// New description
    #[arg(long)]
    pub description: Option<String>,
    /// New price, at most 2 decimals
    #[arg(long, allow_hyphen_values = true)]
    pub price: Option<String>,
    /// New location, 1 to 100 characters
    #[arg(long)]
    pub location: Option<String>,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let changes = PropertyChanges::parse(PropertyInput {
        title: opts.title.as_deref(),
        description: opts.description.as_deref(),
        price: opts.price.as_deref(),
        location: opts.location.as_deref(),
    })
    .context("invalid changes")?;
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
