//! The HTTP surface. Every route is registered in [`api_router`] together with its
//! OpenAPI description, so `/openapi.json` documents exactly what is served; the router
//! builder is shared by `serve` and the tests.

pub mod access_log;
pub mod auth;
pub mod body;
pub mod error;
pub mod ops;
pub mod properties;
pub mod schemas;
pub mod view_cache;
mod view_keys;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, method_not_allowed, not_found};
use crate::service::AppState;
use access_log::AccessLog;
use view_cache::ViewCache;

#[derive(OpenApi)]
#[openapi(
    info(title = "listings", description = "Property listings, cached at two levels and never stale once a write has committed."),
    modifiers(&BearerAuth),
    tags((name = "properties"), (name = "operations"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route with its documentation.
pub fn api_router(state: AppState) -> OpenApiRouter {
    let properties = OpenApiRouter::new()
        .routes(routes!(
            properties::list_properties,
            properties::create_property
        ))
        .routes(routes!(properties::list_properties_no_slash))
        .routes(routes!(
            properties::find_property,
            properties::replace_property,
            properties::update_property,
            properties::delete_property
        ))
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(properties)
        .routes(routes!(ops::health))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .with_state(state)
}

/// Everything the server answers with: access lines and request ids, then the view
/// cache, then the routes.
pub type HttpService = AccessLog<ViewCache<Router>>;

pub fn build_router(state: AppState) -> HttpService {
    let (router, mut openapi) = api_router(state.clone()).split_for_parts();
    document_server_errors(&mut openapi);
    let json = openapi.to_pretty_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize the OpenAPI document");
        "{}".to_owned()
    });
    let router = router
        .layer(Extension(ops::OpenApiJson(Arc::new(json))))
        .fallback(route_not_found)
        .method_not_allowed_fallback(route_method_not_allowed);
    let metrics = state.metrics.clone();
    AccessLog::new(ViewCache::new(state, router), metrics)
}

/// The answers the server makes before any route is chosen (see `server`) can meet
/// every operation: 501 for a transfer coding it does not implement or a method it does
/// not know, and 408 for a request head that did not arrive in time. An operation that
/// documents a 408 of its own (a body too slow) has the head's added to it.
fn document_server_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    let errors = [
        (
            "501",
            "A transfer coding other than one `chunked`, or a method this server does not implement",
        ),
        (
            "408",
            "The request head did not arrive within the header timeout",
        ),
    ];
    for item in openapi.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            for (status, description) in errors {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .and_modify(|documented| {
                        if let RefOr::T(documented) = documented {
                            documented.description =
                                format!("{}; or: {description}", documented.description);
                        }
                    })
                    .or_insert_with(|| error_response(description).into());
            }
        }
    }
}

/// A response with the API's JSON error body.
fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

async fn route_not_found() -> ApiError {
    not_found()
}

async fn route_method_not_allowed() -> ApiError {
    method_not_allowed()
}
