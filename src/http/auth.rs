//! The write API's guard: `Authorization: Bearer <LISTINGS_ADMIN_TOKEN>`, compared in
//! constant time. No token configured means the write API is off (403); a missing or
//! wrong token is 401. Reads stay public.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::http::error::{ApiError, bad_request, forbidden, unauthorized};
use crate::service::AppState;

/// Present in a handler's arguments: the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = &app.settings.admin_token else {
            return Err(forbidden(
                "the write API is off: start the server with LISTINGS_ADMIN_TOKEN (or --admin-token) set to enable it",
            ));
        };
        // Two credentials are ambiguous: a proxy in front may have checked the other.
        if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            return Err(bad_request("Authorization: sent more than once; send one"));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credentials)| credentials)
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        if token.matches(presented.trim()) {
            Ok(Admin)
        } else {
            Err(unauthorized("invalid token"))
        }
    }
}
