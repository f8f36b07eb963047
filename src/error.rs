//! One error vocabulary for every handler, with a stable JSON body `{"error": "..."}`.
//! Missing rows are 404, an unavailable database is 503, and internals are logged, not
//! sent to clients.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::DbError;
use crate::services::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

pub fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "not found".into(),
    }
}

pub fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed".into(),
    }
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

pub fn service_unavailable() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the database is unavailable; try again shortly".into(),
    }
}

pub fn internal_error() -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "internal server error".into(),
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => not_found(),
            ServiceError::Invalid(errors) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: errors.to_string(),
            },
            ServiceError::Db(DbError::Unavailable(e)) => {
                tracing::error!(error = %e, "database unavailable");
                service_unavailable()
            }
            ServiceError::Db(DbError::Query(e)) => {
                tracing::error!(error = %e, "database query failed");
                internal_error()
            }
        }
    }
}
