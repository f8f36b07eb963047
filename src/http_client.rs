//! A minimal HTTP GET for commands that ask the running server (`cache-metrics` in the
//! embedded mode, `healthcheck`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Response;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TIMEOUT: Duration = Duration::from_secs(5);

/// `0.0.0.0` and `[::]` mean "every interface": ask this machine's loopback.
pub fn reachable(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], v6.port()))
        }
        other => other,
    }
}

pub async fn get(address: SocketAddr, path: &str) -> anyhow::Result<Response<Bytes>> {
    let address = reachable(address);
    let uri: hyper::Uri = format!("http://{address}{path}")
        .parse()
        .context("invalid URL")?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let unreachable =
        |cause: String| anyhow::anyhow!("cannot reach the server at http://{address}: {cause}");
    let request = async {
        let (parts, body) = client
            .get(uri)
            .await
            .map_err(|e| unreachable(crate::error_chain::root_cause(&e)))?
            .into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| unreachable(crate::error_chain::root_cause(&e)))?
            .to_bytes();
        anyhow::Ok(Response::from_parts(parts, body))
    };
    tokio::time::timeout(TIMEOUT, request)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
}
