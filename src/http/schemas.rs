//! OpenAPI descriptions of what the API accepts: property bodies and list parameters,
//! built from the very limits and patterns the domain rules use, so `/openapi.json`
//! says exactly what is accepted (a fuzzer in CI holds it to that).

use std::borrow::Cow;

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::domain::query::{MAX_FILTER_CHARS, MAX_PAGE, MAX_PAGE_SIZE};
use crate::domain::{
    DESCRIPTION_MAX_CHARS, LOCATION_MAX_CHARS, PRICE_PATTERN, SortOrder, TITLE_MAX_CHARS, text,
};

fn string(max_chars: usize, pattern: String, description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(max_chars))
        .pattern(Some(pattern))
        .description((!description.is_empty()).then_some(description))
        .into()
}

fn single_line(max_chars: usize, description: &str) -> Schema {
    string(max_chars, text::single_line_pattern(), description)
}

/// A price as a string (exact) or a JSON number (judged by its literal text).
fn price() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(PRICE_PATTERN))
                .examples([serde_json::json!("500000.00")]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0))
                .maximum(Some(99_999_999.99))
                .multiple_of(Some(0.01)),
        )
        .description(Some(
            "Not negative, at most 8 digits before the point and 2 after; a string is exact, a number is judged by its literal text (no exponent)",
        ))
        .into()
}

fn property_body(all_required: bool) -> ObjectBuilder {
    let mut body = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .property(
            "title",
            single_line(TITLE_MAX_CHARS, "Not blank, no control characters"),
        )
        .property(
            "description",
            string(
                DESCRIPTION_MAX_CHARS,
                text::free_text_pattern(),
                "Free text; tabs and line breaks allowed, no other control characters",
            ),
        )
        .property("price", price())
        .property(
            "location",
            single_line(LOCATION_MAX_CHARS, "Not blank, no control characters"),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if all_required {
        body = body
            .required("title")
            .required("price")
            .required("location");
    }
    body
}

/// The body of POST and PUT: every field (description may be left out: empty).
pub struct NewPropertyBody;

impl PartialSchema for NewPropertyBody {
    fn schema() -> RefOr<Schema> {
        property_body(true)
            .examples([serde_json::json!({
                "title": "Beach villa",
                "description": "Four bedrooms, sea view",
                "price": "500000.00",
                "location": "Malindi"
            })])
            .into()
    }
}

impl ToSchema for NewPropertyBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewProperty")
    }
}

/// The body of PATCH: the fields to change, at least one.
pub struct PropertyChangesBody;

impl PartialSchema for PropertyChangesBody {
    fn schema() -> RefOr<Schema> {
        property_body(false)
            .min_properties(Some(1))
            .examples([serde_json::json!({"price": "450000.00"})])
            .into()
    }
}

impl ToSchema for PropertyChangesBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PropertyChanges")
    }
}

/// The list's query parameters. Others are ignored; a known one given empty is 400.
pub struct ListParams;

fn query(name: &str, schema: impl Into<Schema>, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .schema(Some(schema.into()))
        .description(Some(description))
        .build()
}

fn whole_number(max: u32) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(max))
        .into()
}

impl IntoParams for ListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let amount = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(PRICE_PATTERN))
        };
        let orderings: Vec<&str> = SortOrder::ALL.iter().map(|o| o.as_str()).collect();
        vec![
            query(
                "location",
                single_line(MAX_FILTER_CHARS, ""),
                "Exact location; case and the form of accents do not matter (Unicode full case folding of NFC text)",
            ),
            query(
                "min_price",
                amount(),
                "Lowest price, inclusive (the rules of `price`, as a string)",
            ),
            query(
                "max_price",
                amount(),
                "Highest price, inclusive; below min_price nothing matches",
            ),
            query(
                "search",
                single_line(MAX_FILTER_CHARS, ""),
                "Substring of the title or the description, compared by the same rule as location",
            ),
            query(
                "ordering",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(orderings)),
                "Sort order (default -created_at); ties are broken by id in the same direction",
            ),
            query("page", whole_number(MAX_PAGE), "Page number, from 1"),
            query(
                "page_size",
                whole_number(MAX_PAGE_SIZE),
                "Page size (default 100)",
            ),
        ]
    }
}
