//! Property bodies of POST, PUT and PATCH: JSON only (415 otherwise), at most 64 KiB
//! (413), well-formed (400), an object of known fields with string values (price may
//! also be a number), else 422 naming each field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{FieldError, PropertyInput, ValidationErrors};
use crate::error::{
    ApiError, bad_request, payload_too_large, unprocessable, unsupported_media_type,
};

/// The largest body the write API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const FIELDS: [&str; 4] = ["title", "description", "price", "location"];

/// A property as sent by a client (documentation of the accepted body).
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body; parsing is by hand for exact errors"
)]
pub struct PropertyBody {
    /// 1 to 200 characters.
    #[schema(example = "Beach villa")]
    title: Option<String>,
    /// Free text.
    #[schema(example = "Four bedrooms, sea view")]
    description: Option<String>,
    /// At least 0, at most 8 digits before the point and 2 after; a string (exact) or
    /// a number.
    #[schema(value_type = String, example = "500000.00")]
    price: Option<String>,
    /// 1 to 100 characters.
    #[schema(example = "Malindi")]
    location: Option<String>,
}

/// The body's fields as text, ready for `NewProperty::parse` or `PropertyChanges::parse`.
pub struct PropertyJson(Vec<(&'static str, String)>);

impl<S: Send + Sync> FromRequest<S> for PropertyJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large(MAX_BODY_BYTES)
                } else {
                    bad_request(format!("cannot read the body: {e}"))
                }
            })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad_request(format!("malformed JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(bad_request("the body must be a JSON object"));
        };
        let mut errors = Vec::new();
        let mut texts = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in &object {
            let Some(field) = FIELDS.iter().copied().find(|f| f == key) else {
                unknown.push(format!("`{key}`"));
                continue;
            };
            match (field, value) {
                (_, Value::Null) => {}
                (_, Value::String(text)) => texts.push((field, text.clone())),
                ("price", Value::Number(number)) => texts.push((field, number.to_string())),
                _ => errors.push(FieldError {
                    field,
                    rule: "must be a string".into(),
                }),
            }
        }
        if !unknown.is_empty() {
            let rule = format!(
                "unknown field(s) {}; known: title, description, price, location",
                unknown.join(", ")
            );
            errors.push(FieldError {
                field: "body",
                rule,
            });
        }
        if !errors.is_empty() {
            return Err(unprocessable(ValidationErrors(errors)));
        }
        Ok(PropertyJson(texts))
    }
}

impl PropertyJson {
    pub fn input(&self) -> PropertyInput<'_> {
        let get = |name: &str| {
            self.0
                .iter()
                .find(|(field, _)| *field == name)
                .map(|(_, text)| text.as_str())
        };
        PropertyInput {
            title: get("title"),
            description: get("description"),
            price: get("price"),
            location: get("location"),
        }
    }
}
