//! `listings create-property`: validate, insert, invalidate, print the property as JSON.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{CacheOpts, DatabaseOpts, PropertyFieldOpts, settings};
use crate::domain::NewProperty;
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    pub fields: PropertyFieldOpts,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    // Validate before connecting: bad input writes nothing and needs no database.
    let new = NewProperty::parse(opts.fields.input()).context("invalid property")?;
    let app = App::connect(settings(&opts.db, &opts.cache)).await?;
    let created = services::properties::create_property(&app, &new)
        .await
        .context("cannot create the property")?;
    println!("{}", serde_json::to_string(&created)?);
    Ok(())
}
