//! `listings create-property`: validate, insert, invalidate, print the property as JSON.

use anyhow::Context as _;
use clap::Args;

use crate::cli::{GlobalOpts, flag_errors, settle_unconfirmed_writes};
use crate::domain::field_help;
use crate::domain::{NewProperty, PropertyInput};
use crate::service;
use crate::service::App;

#[derive(Debug, Args)]
pub struct Opts {
    #[arg(long, help = field_help::title())]
    pub title: String,
    #[arg(long, help = field_help::description())]
    pub description: Option<String>,
    #[arg(long, allow_hyphen_values = true, help = field_help::price())]
    pub price: String,
    #[arg(long, help = field_help::location())]
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
    let created = service::properties::create_property(&app, &new).await;
    settle_unconfirmed_writes(&app).await;
    let created = created.context("cannot create the property")?;
    println!("{}", serde_json::to_string(&created)?);
    Ok(())
}
