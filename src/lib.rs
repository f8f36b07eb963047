//! `listings`: a property-listing service whose pages and query results are cached at
//! two levels and never served stale once a write has committed.
//!
//! Crate map:
//! - [`application`]: the composition root, building everything `serve` runs.
//! - [`cli`]: the `listings` subcommands; each builds [`app::App`] once.
//! - [`http`]: the axum router ([`http::build_router`], shared by `serve` and tests)
//!   and the view-cache layer.
//! - [`services`]: the only code that touches both the database and the cache.
//! - [`db`]: the Diesel repository over PostgreSQL or SQLite.
//! - [`cache`]: Redis or in-process, typed keys, generations, single flight.
//! - [`server`]: the accept loop, its timeouts and connection cap.
//! - [`domain`]: validated input types; [`config`]: typed settings;
//!   [`metrics`]: every counter; [`error`]: the HTTP error vocabulary;
//!   [`logging`]: log formats and rate-limited failure lines; [`allocator`]: the heap's
//!   arenas, bounded.

pub mod allocator;
pub mod app;
pub mod application;
pub mod cache;
pub mod cause;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod http_client;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod services;
pub mod test_hooks;
