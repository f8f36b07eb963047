//! Integration tests, one crate (compiles once). Every behaviour test runs on the
//! embedded backends (a fresh SQLite file, the in-process cache) and, when
//! LISTINGS_TEST_DATABASE_URL and LISTINGS_TEST_REDIS_URL are set, on PostgreSQL and
//! Redis too, each test in its own database and under its own key prefix.

mod support;

mod admin_cli;
mod ambiguity;
mod api_reads;
mod api_writes;
mod cache_levels;
mod cli;
mod consistency;
mod counts;
mod dashboard;
mod embedded_use;
mod frozen_database;
mod herd;
mod hostile_input;
mod http_properties;
mod http_rfc;
mod layers;
mod logging;
mod long_bodies;
mod lost_updates;
mod multi_process;
mod near_cache;
mod newcomer;
mod openapi;
mod out_of_band;
mod page_plans;
mod pg_tls;
mod redis_deployments;
mod replicas;
mod secrets;
mod slow_clients;
mod snapshot;
mod soak;
mod stress;
mod text_rule;
mod walkthrough;
mod what_a_write_retires;
