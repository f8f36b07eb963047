//! Property handlers: parse the request, call the service, shape the response.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::app::AppState;
use crate::db::models::Property;
use crate::error::ApiError;
use crate::services;

#[derive(Serialize)]
pub struct PropertyList {
    pub data: Vec<Property>,
}

/// `GET /properties/`: every property, newest first.
pub async fn list_properties(State(app): State<AppState>) -> Result<Json<PropertyList>, ApiError> {
    let data = services::properties::list_properties(&app).await?;
    Ok(Json(PropertyList { data }))
}
