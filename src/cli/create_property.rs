//! `listings create-property`: validate, insert, invalidate, print the property as JSON.

use anyhow::Context as _;
use clap::Args;

use crate::app::App;
use crate::cli::{GlobalOpts, PropertyFieldOpts, flag_errors, settle_unconfirmed_writes};
use crate::domain::NewProperty;
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    #[command(flatten)]
    pub fields: PropertyFieldOpts,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    // Validate before connecting: bad input writes nothing and needs no database.
    let new = NewProperty::parse(opts.fields.input())
        .map_err(flag_errors)
        .context("invalid property")?;
    let app = App::connect(global.settings()).await?;
    let created = services::properties::create_property(&app, &new).await;
    settle_unconfirmed_writes(&app).await;
    let created = created.context("cannot create the property")?;
    println!("{}", serde_json::to_string(&created)?);
    Ok(())
}
