//! `listings create-property`: validate, insert, invalidate, print the property as JSON.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{GlobalOpts, flag_errors, settle_unconfirmed_writes};
use crate::domain::{NewProperty, PropertyInput};
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// Title, at most 200 characters
    #[arg(long)]
    pub title: String,
    /// Free text, at most 10000 characters
    #[arg(long)]
    pub description: Option<String>,
    /// Price with at most 2 decimals, e.g. 500000.00
    #[arg(long, allow_hyphen_values = true)]
    pub price: String,
    /// Location, at most 100 characters
    #[arg(long)]
    pub location: String,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    // Validate before connecting: bad input writes nothing and needs no database.
    let new = NewProperty::parse(PropertyInput {
        title: Some(&opts.title),
        description: opts.description.as_deref(),
        price: Some(&opts.price),
        location: Some(&opts.location),
    })
    .map_err(flag_errors)
    .context("invalid property")?;
    let app = App::connect(global.settings()).await?;
    let created = services::properties::create_property(&app, &new).await;
    settle_unconfirmed_writes(&app).await;
    let created = created.context("cannot create the property")?;
    println!("{}", serde_json::to_string(&created)?);
    Ok(())
}
