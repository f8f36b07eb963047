//! The HTTP surface: every route is listed in [`build_router`], shared by `serve` and
//! the tests.

pub mod ops;
pub mod properties;
pub mod view_cache;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

use crate::app::AppState;
use crate::error::{ApiError, method_not_allowed, not_found};

pub fn build_router(state: AppState) -> Router {
    let cached = Router::new()
        .route("/properties/", get(properties::list_properties))
        .route("/properties", get(properties::list_properties))
        .route_layer(from_fn_with_state(state.clone(), view_cache::cache_views));
    Router::new()
        .merge(cached)
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(route_method_not_allowed)
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    not_found()
}

async fn route_method_not_allowed() -> ApiError {
    method_not_allowed()
}
