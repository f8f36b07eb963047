//! A property's fields as text, before validation: one type, read one way, for HTTP
//! bodies and for import rows (JSON lines and CSV), so both accept exactly the same input.
//!
//! Rules of the JSON form: an object whose keys are known fields (an unknown key is an
//! error, so a typo such as `titel` cannot silently drop data); text fields are strings;
//! `price` is a string or a JSON number, judged by its literal text (so
//! `19.999999999999999` is refused for its decimals, never rounded to 20.00); `null` is
//! not a value (leave the field out instead).

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::property::{FieldError, PropertyInput, ValidationErrors};

/// Every field a property has, in the order errors are reported.
pub const FIELD_NAMES: [&str; 4] = ["title", "description", "price", "location"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyFields {
    pub title: Option<String>,
    pub description: Option<String>,
    pub price: Option<String>,
    pub location: Option<String>,
}

/// Why a JSON document is not a property's fields.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldsError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
    /// An object with unknown keys or values of the wrong type.
    Invalid(ValidationErrors),
}

impl std::fmt::Display for FieldsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldsError::Malformed(why) => write!(f, "malformed JSON: {why}"),
            FieldsError::NotAnObject => f.write_str("must be a JSON object"),
            FieldsError::Invalid(errors) => errors.fmt(f),
        }
    }
}

/// The rule for keys that name no field.
pub fn unknown_fields_error(unknown: &[String]) -> FieldError {
    let names: Vec<String> = unknown.iter().map(|name| format!("`{name}`")).collect();
    FieldError {
        field: "fields",
        rule: format!(
            "unknown field(s) {}; known: {}",
            names.join(", "),
            FIELD_NAMES.join(", ")
        ),
    }
}

impl PropertyFields {
    pub fn from_json(bytes: &[u8]) -> Result<PropertyFields, FieldsError> {
        let document: &RawValue =
            serde_json::from_slice(bytes).map_err(|e| FieldsError::Malformed(e.to_string()))?;
        if !document.get().starts_with('{') {
            return Err(FieldsError::NotAnObject);
        }
        let Members(members) = serde_json::from_str(document.get())
            .map_err(|e| FieldsError::Malformed(e.to_string()))?;
        let mut object: BTreeMap<String, &RawValue> = BTreeMap::new();
        for (key, value) in members {
            // A validator in front reading the first of two values would disagree with
            // one reading the last: ambiguous, so refused.
            if object.contains_key(&key) {
                return Err(FieldsError::Malformed(format!(
                    "the key `{}` appears more than once in the object; send each field once",
                    key.escape_default()
                )));
            }
            object.insert(key, value);
        }
        let mut fields = PropertyFields::default();
        let mut errors = Vec::new();
        let unknown: Vec<String> = object
            .keys()
            .filter(|key| !FIELD_NAMES.contains(&key.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            errors.push(unknown_fields_error(&unknown));
        }
        for name in FIELD_NAMES {
            let Some(raw) = object.get(name) else {
                continue;
            };
            match (field_text(name, raw.get()), fields.slot(name)) {
                (Ok(text), Some(slot)) => *slot = Some(text),
                (Err(rule), _) => errors.push(FieldError { field: name, rule }),
                (Ok(_), None) => {}
            }
        }
        if errors.is_empty() {
            Ok(fields)
        } else {
            Err(FieldsError::Invalid(ValidationErrors(errors)))
        }
    }

    /// The field called `name`; `None` for a name that is not in [`FIELD_NAMES`].
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "title" => &mut self.title,
            "description" => &mut self.description,
            "price" => &mut self.price,
            "location" => &mut self.location,
            _ => return None,
        })
    }

    pub fn input(&self) -> PropertyInput<'_> {
        PropertyInput {
            title: self.title.as_deref(),
            description: self.description.as_deref(),
            price: self.price.as_deref(),
            location: self.location.as_deref(),
        }
    }
}

/// One value's text, from its JSON literal.
fn field_text(name: &str, literal: &str) -> Result<String, String> {
    match literal.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(literal)
            .map_err(|e| format!("is not a valid string: {e}")),
        Some(b'-' | b'0'..=b'9') if name == "price" => Ok(literal.to_owned()),
        _ if name == "price" => Err("must be a string or a number".into()),
        _ => Err("must be a string".into()),
    }
}

/// A JSON object's members in order, duplicates kept (a map would keep only one).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_naming_the_key() {
        for body in [
            r#"{"price":"-5","price":"2.00","title":"t","location":"l"}"#,
            r#"{"price":"2.00","pri\u0063e":"-5","title":"t","location":"l"}"#,
        ] {
            match PropertyFields::from_json(body.as_bytes()) {
                Err(FieldsError::Malformed(message)) => {
                    assert!(
                        message.contains("`price` appears more than once"),
                        "{message}"
                    )
                }
                Err(other) => panic!("{body}: {other}"),
                Ok(_) => panic!("{body}: accepted"),
            }
        }
    }

    fn parse(json: &str) -> Result<PropertyFields, FieldsError> {
        PropertyFields::from_json(json.as_bytes())
    }

    #[test]
    fn numbers_keep_their_literal_text() {
        let fields = parse(r#"{"price": 19.999999999999999, "title": "T"}"#).unwrap();
        assert_eq!(fields.price.as_deref(), Some("19.999999999999999"));
        let fields = parse(r#"{"price": 1e5}"#).unwrap();
        assert_eq!(fields.price.as_deref(), Some("1e5"));
        let Err(FieldsError::Invalid(errors)) = parse(r#"{"price": null, "title": null}"#) else {
            panic!("null is not a value");
        };
        assert_eq!(
            errors.to_string(),
            "title: must be a string; price: must be a string or a number"
        );
        assert_eq!(
            parse(" {\"title\": \"T\"} \n").unwrap().title.as_deref(),
            Some("T")
        );
    }

    #[test]
    fn wrong_shapes_are_named() {
        assert!(matches!(parse("{"), Err(FieldsError::Malformed(_))));
        assert_eq!(parse("[1]"), Err(FieldsError::NotAnObject));
        assert_eq!(parse(" \"x\" "), Err(FieldsError::NotAnObject));
        let Err(FieldsError::Invalid(errors)) =
            parse(r#"{"title": 5, "price": true, "rooms": 3, "titel": "x"}"#)
        else {
            panic!("invalid fields expected");
        };
        assert_eq!(
            errors.to_string(),
            "fields: unknown field(s) `rooms`, `titel`; known: title, description, price, location; \
             title: must be a string; price: must be a string or a number"
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let fields = parse(r#"{"title": "a\u0000b", "location": "Mal\u00efndi"}"#).unwrap();
        assert_eq!(fields.title.as_deref(), Some("a\0b"));
        assert_eq!(fields.location.as_deref(), Some("Malïndi"));
    }
}
