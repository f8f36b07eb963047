//! One error vocabulary for every handler, with a stable JSON body:
//! `{"error": "..."}`, plus `"fields": {"price": "..."}` for invalid input (422).
//! Missing rows are 404, an unavailable database is 503, and internals are logged, not
//! sent to clients.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{FieldError, ValidationErrors};
use crate::logging::{Failure, log_limited};
use crate::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    fields: Option<BTreeMap<String, String>>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Invalid input only: each offending field and the rule it broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        fields: None,
    }
}

pub fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "not found")
}

pub fn method_not_allowed() -> ApiError {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, message)
}

/// A query parameter that breaks a rule: 400 naming the parameter and the rule.
pub fn invalid_parameter(e: FieldError) -> ApiError {
    bad_request(format!("{}: {}", e.field, e.rule))
}

pub fn unauthorized(message: impl Into<String>) -> ApiError {
    error(StatusCode::UNAUTHORIZED, message)
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    error(StatusCode::FORBIDDEN, message)
}

/// The request names a host this address does not answer for (RFC 9110 §15.5.20).
pub fn misdirected_request(message: impl Into<String>) -> ApiError {
    error(StatusCode::MISDIRECTED_REQUEST, message)
}

pub fn unsupported_media_type() -> ApiError {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the body must be JSON (Content-Type: application/json)",
    )
}

pub fn payload_too_large(limit: usize) -> ApiError {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body must be at most {} KiB", limit / 1024),
    )
}

/// Invalid input: 422 with every field and rule.
pub fn unprocessable(errors: ValidationErrors) -> ApiError {
    let fields = errors
        .0
        .iter()
        .map(|e| (e.field.to_owned(), e.rule.clone()))
        .collect();
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("invalid property: {errors}"),
        fields: Some(fields),
    }
}

pub fn service_unavailable() -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable; try again shortly",
    )
}

/// The body did not arrive within the body timeout.
pub fn request_timeout(limit: std::time::Duration) -> ApiError {
    error(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {}",
            crate::config::human_duration(limit)
        ),
    )
}

pub fn internal_error() -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.message,
                fields: self.fields,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => not_found(),
            ServiceError::PreconditionFailed => error(
                StatusCode::PRECONDITION_FAILED,
                "the property changed since the ETag in If-Match (or matches If-None-Match); read it again, then retry with its new ETag",
            ),
            ServiceError::OutcomeUnknown(e) => {
                log_limited!(error, Failure::Database, error = %e, "database unavailable");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database did not confirm the write in time; it may still be applied, so read the property before retrying",
                )
            }
            ServiceError::Unavailable(e) => {
                log_limited!(error, Failure::Database, error = %e, "database unavailable");
                service_unavailable()
            }
            ServiceError::Failed(e) => {
                log_limited!(error, Failure::DatabaseQuery, error = %e, "database query failed");
                internal_error()
            }
        }
    }
}
