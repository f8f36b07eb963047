//! `listings update-property ID`: change the given fields, invalidate, print the result.

use anyhow::Context as _;
use clap::Args;

use crate::cli::{GlobalOpts, PropertyFieldOpts, flag_errors, settle_unconfirmed_writes};
use crate::domain::PropertyChanges;
use crate::service::App;
use crate::service::{self, ServiceError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The property's id
    pub id: i64,
    #[command(flatten)]
    pub fields: PropertyFieldOpts,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let changes = PropertyChanges::parse(opts.fields.input())
        .map_err(flag_errors)
        .context("invalid changes")?;
    let app = App::connect(global.settings()).await?;
    let updated = service::properties::update_property(&app, opts.id, &changes).await;
    settle_unconfirmed_writes(&app).await;
    match updated {
        Ok(updated) => {
            println!("{}", serde_json::to_string(&updated)?);
            Ok(())
        }
        Err(ServiceError::NotFound) => anyhow::bail!("property {} not found", opts.id),
        Err(e) => Err(e).context("cannot update the property"),
    }
}
