//! The view level's responses: how a rendered response is cached (its envelope, its
//! encodings and ETags) and how each server keeps one ready to send. The HTTP layer
//! renders and serves them; the service layer stores them without looking inside.

mod envelope;
pub mod file_copy;
pub mod precondition;
mod ready;

pub use envelope::{CachedResponse, Encoding};
pub use ready::ReadyView;
