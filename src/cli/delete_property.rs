//! `listings delete-property ID`: delete, invalidate.

use anyhow::Context as _;
use clap::Args;

use crate::cli::{GlobalOpts, settle_unconfirmed_writes};
use crate::service::App;
use crate::service::{self, ServiceError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The property's id
    pub id: i64,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let app = App::connect(global.settings()).await?;
    let deleted = service::properties::delete_property(&app, opts.id).await;
    settle_unconfirmed_writes(&app).await;
    match deleted {
        Ok(()) => {
            println!("Deleted property {}.", opts.id);
            Ok(())
        }
        Err(ServiceError::NotFound) => anyhow::bail!("property {} not found", opts.id),
        Err(e) => Err(e).context("cannot delete the property"),
    }
}
