//! Property bodies of POST, PUT and PATCH: JSON only (415 otherwise), at most 64 KiB
//! (413), received within the body timeout (408), well-formed (400), an object of known
//! fields (see `domain::PropertyFields`), else 422 naming each field.

use crate::domain::{FieldsError, PropertyFields};
use crate::http::error::{
    ApiError, bad_request, payload_too_large, request_timeout, unprocessable,
    unsupported_media_type,
};
use crate::service::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

/// The largest body the write API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body's fields as text, ready for `NewProperty::parse` or `PropertyChanges::parse`.
pub struct PropertyJson(pub PropertyFields);

impl FromRequest<AppState> for PropertyJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(unsupported_media_type());
        }
        // A client sending its body slowly, or announcing more than it sends, must not
        // hold the connection and a task for ever.
        let limit = app.settings.http.body_timeout;
        let bytes = tokio::time::timeout(limit, Bytes::from_request(request, app))
            .await
            .map_err(|_| request_timeout(limit))?
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large(MAX_BODY_BYTES)
                } else {
                    bad_request(format!("cannot read the body: {e}"))
                }
            })?;
        match PropertyFields::from_json(&bytes) {
            Ok(fields) => Ok(PropertyJson(fields)),
            Err(FieldsError::Invalid(errors)) => Err(unprocessable(errors)),
            Err(other) => Err(bad_request(other.to_string())),
        }
    }
}
