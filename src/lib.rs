//! `listings`: a property-listing service whose pages and query results are cached at
//! two levels and never served stale once a write has committed.
//!
//! Crate map, top to bottom (a module uses only those below it; `tests/it/layers.rs`
//! keeps that so):
//! - [`cli`]: the `listings` subcommands; each builds a [`service::App`] once.
//! - `startup`: the composition root, building everything `serve` runs.
//! - [`http`]: the axum router ([`http::build_router`], shared by `serve` and tests),
//!   its error vocabulary and the view-cache layer; `dashboard`: the operator's page.
//! - `server`: the accept loop, its timeouts and connection cap.
//! - `view`: a rendered response as it is cached (envelope, encodings, ETags).
//! - [`service`]: the only code that touches the database and the cache, which are
//!   private to it.
//! - `redis_link`: reaching Redis (single, Sentinel, Cluster, TLS).
//! - [`domain`]: validated input types and the records reads return; [`config`]: typed
//!   settings and every default; [`metrics`]: every counter; [`logging`]: log formats
//!   and rate-limited failure lines; `access_line`: the access line and request id
//!   that the router's answers and the server's early ones share; `error_chain`, `stable_hash`, [`allocator`]:
//!   small leaves.

mod access_line;
pub mod allocator;
pub mod cli;
pub mod config;
mod dashboard;
pub mod domain;
mod error_chain;
pub mod http;
pub mod http_client;
pub mod logging;
pub mod metrics;
mod redis_link;
mod server;
pub mod service;
mod stable_hash;
mod startup;
pub mod test_hooks;
mod view;

pub use startup::BoundServer;
