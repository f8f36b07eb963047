//! Property handlers: parse the request, call the service, shape the response. The
//! `#[utoipa::path]` on each is what `/openapi.json` is generated from.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use tracing::Instrument as _;
use utoipa::ToSchema;

use crate::domain::Property;
use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
use crate::http::auth::Admin;
use crate::http::body::PropertyJson;
use crate::http::error::{
    ApiError, ErrorBody, internal_error, invalid_parameter, not_found, unprocessable,
};
use crate::http::schemas::{ListParams, NewPropertyBody, PropertyChangesBody};
use crate::http::view_keys::ParsedQuery;
use crate::service::ServiceError;
use crate::service::StoredPage;
use crate::service::properties as service;
use crate::service::{AppState, Dependencies};
use crate::view::precondition::{Precondition, item_etag};

/// `If-Match` and `If-None-Match` of a write, every field line of each combined; a
/// malformed one is a 400 naming the field.
pub struct Conditions(Precondition);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let lines = |name| {
            parts
                .headers
                .get_all(name)
                .into_iter()
                .map(|v| v.as_bytes())
        };
        Precondition::parse(lines(header::IF_MATCH), lines(header::IF_NONE_MATCH))
            .map(Conditions)
            .map_err(crate::http::error::bad_request)
    }
}

/// A listing as a write answers it, with the ETag a later conditional write sends back.
fn with_etag(property: Property) -> impl IntoResponse {
    let etag = item_etag(&property);
    ([(header::ETAG, etag)], Json(property))
}

/// A page of properties as JSON (see [`PropertyList`]), with what it depends on.
type ListResponse = (
    Extension<Dependencies>,
    [(header::HeaderName, HeaderValue); 1],
    Bytes,
);

/// A page of properties.
#[derive(Serialize, ToSchema)]
pub struct PropertyList {
    /// How many properties match in all.
    pub count: i64,
    /// The next page's URL, or null on the last page.
    pub next: Option<String>,
    /// The previous page's URL, or null on the first page.
    pub previous: Option<String>,
    pub data: Vec<Property>,
}

#[utoipa::path(
    get,
    path = "/properties/",
    tag = "properties",
    params(ListParams),
    responses(
        (status = 200, description = "A page of properties, newest first by default", body = PropertyList,
         headers(("ETag" = String), ("X-Cache" = String, description = "HIT or MISS"))),
        (status = 304, description = "If-None-Match matched the current ETag"),
        (status = 400, description = "A parameter breaks its rule", body = ErrorBody),
        (status = 414, description = "The request target is longer than 8 KiB", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list_properties(
    State(app): State<AppState>,
    parsed: Option<Extension<ParsedQuery>>,
    RawQuery(query): RawQuery,
) -> Result<ListResponse, ApiError> {
    // The view layer parsed it already, unless it let the handler explain an error.
    let query = match parsed {
        Some(Extension(ParsedQuery(query))) => query,
        None => Arc::new(
            PropertyQuery::from_query_string(query.as_deref().unwrap_or_default())
                .map_err(invalid_parameter)?,
        ),
    };
    let (stored, dependencies) = service::list_properties(&app, &query).await?;
    let (previous, next) = query.neighbours(stored.page.count);
    let body = list_body(stored, previous, next).map_err(|e| {
        tracing::error!(error = %e, "a page could not be serialized");
        internal_error()
    })?;
    let json = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    Ok((Extension(dependencies), json, body))
}

/// The [`PropertyList`] of a page, written around the JSON the data level stores it as
/// (`{"count":N` and `,"data":[…]}` as they are, the links between), which is what
/// serializing the list gives, byte for byte. A value of another form (another build's,
/// sharing the cache) is serialized from what it decoded to instead.
fn list_body(
    stored: StoredPage,
    previous: Option<String>,
    next: Option<String>,
) -> serde_json::Result<Bytes> {
    let json = &stored.json;
    let head = format!("{{\"count\":{}", stored.page.count);
    let rows = json
        .get(head.len()..)
        .filter(|rows| rows.starts_with(b",\"data\":[") && rows.ends_with(b"]}"));
    let Some(rows) = rows.filter(|_| json.starts_with(head.as_bytes())) else {
        // Not the form a page is stored in: serialize the list after all.
        let list = PropertyList {
            count: stored.page.count,
            next,
            previous,
            data: stored.page.data,
        };
        return serde_json::to_vec(&list).map(Bytes::from);
    };
    let mut body = Vec::with_capacity(json.len() + 256);
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(b",\"next\":");
    serde_json::to_writer(&mut body, &next)?;
    body.extend_from_slice(b",\"previous\":");
    serde_json::to_writer(&mut body, &previous)?;
    body.extend_from_slice(rows);
    Ok(Bytes::from(body))
}

/// The same list without the trailing slash.
#[utoipa::path(
    get,
    path = "/properties",
    tag = "properties",
    params(ListParams),
    responses(
        (status = 200, description = "As GET /properties/", body = PropertyList),
        (status = 304, description = "If-None-Match matched the current ETag"),
        (status = 400, description = "A parameter breaks its rule", body = ErrorBody),
        (status = 414, description = "The request target is longer than 8 KiB", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list_properties_no_slash(
    state: State<AppState>,
    parsed: Option<Extension<ParsedQuery>>,
    query: RawQuery,
) -> Result<ListResponse, ApiError> {
    list_properties(state, parsed, query).await
}

/// Runs a write in its own task: if the client goes away, the request is dropped, but
/// the write still runs to its end, invalidation included; a commit whose invalidation
/// was cancelled would leave the cache serving the old data.
async fn to_completion<T: Send + 'static>(
    write: impl Future<Output = Result<T, ServiceError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(write.in_current_span()).await {
        Ok(result) => Ok(result?),
        Err(e) => {
            // A panic was logged by the panic hook, in this request's span.
            tracing::error!(error = %e, "a write task failed");
            Err(internal_error())
        }
    }
}

/// The ways a write with a body can fail, shared by POST, PUT and PATCH.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "documents responses; `ApiError` produces them")]
pub enum BodyWriteErrors {
    /// Malformed JSON, or not a JSON object
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// Missing or wrong token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The write API is off (no LISTINGS_ADMIN_TOKEN)
    #[response(status = 403)]
    Off(ErrorBody),
    /// The body did not arrive within the body timeout
    #[response(status = 408)]
    TooSlow(ErrorBody),
    /// Body over 64 KiB
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Body is not application/json
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// Invalid fields, each named with its rule
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// The database is unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The id in `/properties/{id}/`, percent-decoded by the router: a segment that is not
/// a number (or not even UTF-8, `%FF`) names no property, so 404 like any other.
pub struct ItemId(i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ItemId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Ok(Path(raw)) = Path::<String>::from_request_parts(parts, state).await else {
            return Err(not_found());
        };
        raw.parse().map(ItemId).map_err(|_| not_found())
    }
}

#[utoipa::path(
    get,
    path = "/properties/{id}/",
    tag = "properties",
    params(("id" = i64, Path, description = "Property id")),
    responses(
        (status = 200, description = "The property", body = Property,
         headers(("ETag" = String), ("X-Cache" = String, description = "HIT or MISS"))),
        (status = 304, description = "If-None-Match matched the current ETag"),
        (status = 404, description = "No such property", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn find_property(
    State(app): State<AppState>,
    ItemId(id): ItemId,
) -> Result<(Extension<Dependencies>, Json<Property>), ApiError> {
    let (property, dependencies) = service::find_property(&app, id).await?;
    Ok((Extension(dependencies), Json(property)))
}

#[utoipa::path(
    post,
    path = "/properties/",
    tag = "properties",
    request_body(content = NewPropertyBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Property, headers(("Location" = String), ("ETag" = String))),
        BodyWriteErrors,
    )
)]
pub async fn create_property(
    State(app): State<AppState>,
    _: Admin,
    body: PropertyJson,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewProperty::parse(body.0.input()).map_err(unprocessable)?;
    let created = to_completion(async move { service::create_property(&app, &new).await }).await?;
    let location = format!("/properties/{}/", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        with_etag(created),
    ))
}

#[utoipa::path(
    put,
    path = "/properties/{id}/",
    tag = "properties",
    params(("id" = i64, Path, description = "Property id"), ConditionalHeaders),
    request_body(content = NewPropertyBody, content_type = "application/json",
                  description = "Every field; title, price and location are required"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced", body = Property, headers(("ETag" = String))),
        (status = 404, description = "No such property", body = ErrorBody),
        (status = 412, description = "If-Match or If-None-Match is false: nothing was written", body = ErrorBody),
        BodyWriteErrors,
    )
)]
pub async fn replace_property(
    State(app): State<AppState>,
    _: Admin,
    ItemId(id): ItemId,
    Conditions(precondition): Conditions,
    body: PropertyJson,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewProperty::parse(body.0.input()).map_err(unprocessable)?;
    let replaced =
        to_completion(
            async move { service::replace_property(&app, id, &new, &precondition).await },
        )
        .await?;
    Ok(with_etag(replaced))
}

#[utoipa::path(
    patch,
    path = "/properties/{id}/",
    tag = "properties",
    params(("id" = i64, Path, description = "Property id"), ConditionalHeaders),
    request_body(content = PropertyChangesBody, content_type = "application/json",
                  description = "Only the fields to change; at least one"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Property, headers(("ETag" = String))),
        (status = 404, description = "No such property", body = ErrorBody),
        (status = 412, description = "If-Match or If-None-Match is false: nothing was written", body = ErrorBody),
        BodyWriteErrors,
    )
)]
pub async fn update_property(
    State(app): State<AppState>,
    _: Admin,
    ItemId(id): ItemId,
    Conditions(precondition): Conditions,
    body: PropertyJson,
) -> Result<impl IntoResponse, ApiError> {
    let changes = PropertyChanges::parse(body.0.input()).map_err(unprocessable)?;
    let updated = to_completion(async move {
        service::update_property_if(&app, id, &changes, &precondition).await
    })
    .await?;
    Ok(with_etag(updated))
}

#[utoipa::path(
    delete,
    path = "/properties/{id}/",
    tag = "properties",
    params(("id" = i64, Path, description = "Property id"), ConditionalHeaders),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A malformed If-Match or If-None-Match", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The write API is off", body = ErrorBody),
        (status = 404, description = "No such property", body = ErrorBody),
        (status = 412, description = "If-Match or If-None-Match is false: nothing was deleted", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn delete_property(
    State(app): State<AppState>,
    _: Admin,
    ItemId(id): ItemId,
    Conditions(precondition): Conditions,
) -> Result<StatusCode, ApiError> {
    to_completion(async move { service::delete_property_if(&app, id, &precondition).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The conditional-request headers of a write, for the API document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct ConditionalHeaders {
    /// Write only if the property's current ETag is one of these (`*`: if it exists):
    /// send back the ETag a GET or a write answered with, so that an edit made
    /// meanwhile by someone else is not overwritten (412 instead).
    #[param(
        rename = "If-Match",
        required = false,
        pattern = r#"^(\*|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*")*)?$"#
    )]
    if_match: String,
    /// Write only if the property's current ETag is none of these (`*`: never, since it
    /// exists).
    #[param(
        rename = "If-None-Match",
        required = false,
        pattern = r#"^(\*|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*")*)?$"#
    )]
    if_none_match: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PropertyPage;

    #[test]
    fn a_list_body_is_the_list_serialized() {
        let property = Property {
            id: 7,
            title: "Sea \"view\" \u{1F3E0}".into(),
            description: "Line\nbreak".into(),
            price: "125000.50".parse().unwrap(),
            location: "Malindi".into(),
            created_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let pages = [(0, vec![]), (41, vec![property.clone(), property])];
        let links = [
            (None, None),
            (
                Some("/properties/?page=1".to_owned()),
                Some("/properties/?q=\"x\"".to_owned()),
            ),
        ];
        for (count, data) in pages {
            for (previous, next) in links.clone() {
                let list = PropertyList {
                    count,
                    next: next.clone(),
                    previous: previous.clone(),
                    data: data.clone(),
                };
                let page = PropertyPage {
                    count,
                    data: data.clone(),
                };
                let body = list_body(StoredPage::new(page), previous, next).unwrap();
                assert_eq!(body, serde_json::to_vec(&list).unwrap());
            }
        }
    }
}
