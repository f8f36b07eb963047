//! `listings healthcheck`: exit 0 when the local server answers `/health`.

use std::net::SocketAddr;

use clap::Args;

use crate::http_client;

#[derive(Debug, Args)]
pub struct Opts {
    /// Address the server listens on (as `serve --bind`)
    #[arg(long, env = "LISTINGS_BIND", default_value_t = crate::config::DEFAULT_BIND)]
    pub bind: SocketAddr,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let status = http_client::get(opts.bind, "/health").await?.status();
    anyhow::ensure!(
        status.is_success(),
        "the server answered /health with {status}"
    );
    println!("ok");
    Ok(())
}
