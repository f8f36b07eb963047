//! `listings create-property`: validate, insert, invalidate, print the property as JSON.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{CacheOpts, DatabaseOpts, settings};
use crate::domain::{NewProperty, PropertyInput};
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// Title, 1 to 200 characters
    #[arg(long)]
    pub title: Option<String>,
    /// Free text
    #[arg(long, default_value = "")]
    pub description: String,
    /// Price with at most 2 decimals, e.g. 500000.00
    #[arg(long, allow_hyphen_values = true)]
    pub price: Option<String>,
    /// Location, 1 to 100 characters
    #[arg(long)]
    pub location: Option<String>,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    // Validate before connecting: bad input writes nothing and needs no database.
    let new = NewProperty::parse(PropertyInput {
        title: opts.title.as_deref(),
        description: Some(&opts.description),
        price: opts.price.as_deref(),
        location: opts.location.as_deref(),
    })
    .context("invalid property")?;
    let app = App::connect(settings(&opts.db, &opts.cache)).await?;
    let created = services::properties::create_property(&app, &new)
        .await
        .context("cannot create the property")?;
    println!("{}", serde_json::to_string(&created)?);
    Ok(())
}
