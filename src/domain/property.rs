//! Properties as input: types that parse once and are valid from then on: a `NewProperty` can only be
//! built from input that passes every rule, so nothing invalid reaches the database.

use std::fmt;

use bigdecimal::BigDecimal;

use super::text;

/// The longest title, in characters (the column is VARCHAR(200)).
pub const TITLE_MAX_CHARS: usize = 200;
/// The longest location, in characters (the column is VARCHAR(100)).
pub const LOCATION_MAX_CHARS: usize = 100;
/// The longest description, in characters: a long listing text, yet small enough that
/// a page of 100 listings stays a cacheable response.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// NUMERIC(10,2): at most 8 digits before the point.
pub const PRICE_MAX_INTEGER_DIGITS: usize = 8;
/// [`parse_amount`]'s rules as a JSON-Schema pattern (no `$`: see `text`).
pub const PRICE_PATTERN: &str = r"^(?:\+?(?:0*[1-9][0-9]{0,7}|0+)(?:\.[0-9]{0,2})?|\+?\.[0-9]{1,2}|-(?:0+(?:\.0{0,2})?|\.0{1,2}))(?![\s\S])";

/// Each field's rules in a few words, as the CLI's help says them.
pub mod field_help {
    use super::{DESCRIPTION_MAX_CHARS, LOCATION_MAX_CHARS, TITLE_MAX_CHARS};

    pub fn title() -> String {
        format!("Title, at most {TITLE_MAX_CHARS} characters")
    }

    pub fn description() -> String {
        format!("Free text, at most {DESCRIPTION_MAX_CHARS} characters")
    }

    pub fn price() -> String {
        "Price with at most 2 decimals, e.g. 500000.00".to_owned()
    }

    pub fn location() -> String {
        format!("Location, at most {LOCATION_MAX_CHARS} characters")
    }
}

/// One rule broken by one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub rule: String,
}

/// Every rule the input broke, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.rule)?;
        }
        Ok(())
    }
}

/// Checks a required, bounded, single-line text field as sent; returns it trimmed.
fn bounded_text(field: &'static str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let rule = if let Some(rule) = text::single_line_violation(raw) {
        rule
    } else if text::is_blank_text(raw) {
        "must not be empty".to_owned()
    } else if raw.chars().count() > max_chars {
        format!("must be at most {max_chars} characters")
    } else {
        return Ok(text::trim(raw).to_owned());
    };
    Err(FieldError { field, rule })
}

/// Free text as sent, possibly empty, with line breaks; returns it trimmed.
pub fn parse_description(raw: &str) -> Result<String, FieldError> {
    let rule = if let Some(rule) = text::free_text_violation(raw) {
        rule
    } else if raw.chars().count() > DESCRIPTION_MAX_CHARS {
        format!("must be at most {DESCRIPTION_MAX_CHARS} characters")
    } else {
        return Ok(text::trim(raw).to_owned());
    };
    Err(FieldError {
        field: "description",
        rule,
    })
}

pub fn parse_title(raw: &str) -> Result<String, FieldError> {
    bounded_text("title", raw, TITLE_MAX_CHARS)
}

pub fn parse_location(raw: &str) -> Result<String, FieldError> {
    bounded_text("location", raw, LOCATION_MAX_CHARS)
}

/// A price as NUMERIC(10,2) holds it: exact, not negative, at most 8 digits before the
/// point and 2 after, written as sent (no spaces, no exponent). Rounding is never
/// silent: 1.005 is refused, not stored as 1.01. [`PRICE_PATTERN`] says the same.
pub fn parse_price(raw: &str) -> Result<BigDecimal, FieldError> {
    parse_amount("price", raw)
}

/// [`parse_price`]'s rules for any money field (`min_price`, `max_price`).
pub fn parse_amount(field: &'static str, raw: &str) -> Result<BigDecimal, FieldError> {
    let err = |rule: &str| FieldError {
        field,
        rule: rule.to_owned(),
    };
    let literal = raw;
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal.strip_prefix('+').unwrap_or(literal)),
    };
    let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (integer.is_empty() && fraction.is_empty()) || !all_digits(integer) || !all_digits(fraction)
    {
        return Err(err("must be a decimal number such as 500000.00"));
    }
    let is_zero = integer.bytes().chain(fraction.bytes()).all(|b| b == b'0');
    if negative && !is_zero {
        return Err(err("must not be negative"));
    }
    if fraction.len() > 2 {
        return Err(err("must have at most 2 decimal places"));
    }
    if integer.trim_start_matches('0').len() > PRICE_MAX_INTEGER_DIGITS {
        return Err(err(
            "must be less than 100000000 (at most 8 digits before the point)",
        ));
    }
    let integer = if integer.is_empty() { "0" } else { integer };
    format!("{integer}.{fraction:0<2}")
        .parse::<BigDecimal>()
        .map(|price| price.with_scale(2))
        .map_err(|_| err("must be a decimal number such as 500000.00"))
}

/// A property to insert, valid by construction.
#[derive(Clone, Debug, PartialEq)]
pub struct NewProperty {
    pub title: String,
    pub description: String,
    pub price: BigDecimal,
    pub location: String,
}

/// Raw input for a new property, from the CLI or a JSON body.
#[derive(Clone, Debug, Default)]
pub struct PropertyInput<'a> {
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub price: Option<&'a str>,
    pub location: Option<&'a str>,
}

impl NewProperty {
    /// Validates every field and reports every broken rule at once.
    pub fn parse(input: PropertyInput<'_>) -> Result<NewProperty, ValidationErrors> {
        let mut errors = Vec::new();
        let title = required("title", input.title.map(parse_title), &mut errors);
        let description = optional(input.description.map(parse_description), &mut errors);
        let price = required("price", input.price.map(parse_price), &mut errors);
        let location = required("location", input.location.map(parse_location), &mut errors);
        match (title, price, location) {
            (Some(title), Some(price), Some(location)) if errors.is_empty() => Ok(NewProperty {
                title,
                description: description.unwrap_or_default(),
                price,
                location,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }
}

/// Fields to change on an existing property; only the given ones are validated and
/// written, and at least one must be given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PropertyChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub price: Option<BigDecimal>,
    pub location: Option<String>,
}

impl PropertyChanges {
    pub fn parse(input: PropertyInput<'_>) -> Result<PropertyChanges, ValidationErrors> {
        let mut errors = Vec::new();
        let title = optional(input.title.map(parse_title), &mut errors);
        let description = optional(input.description.map(parse_description), &mut errors);
        let price = optional(input.price.map(parse_price), &mut errors);
        let location = optional(input.location.map(parse_location), &mut errors);
        let changes = PropertyChanges {
            title,
            description,
            price,
            location,
        };
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        if changes == PropertyChanges::default() {
            return Err(ValidationErrors(vec![FieldError {
                field: "fields",
                rule: "at least one of title, description, price, location must be given".into(),
            }]));
        }
        Ok(changes)
    }
}

/// Keeps a parsed value, or records why there is none.
fn required<T>(
    field: &'static str,
    parsed: Option<Result<T, FieldError>>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    if parsed.is_none() {
        errors.push(FieldError {
            field,
            rule: "is required".into(),
        });
    }
    optional(parsed, errors)
}

/// Keeps a parsed value; records the error of one that failed to parse.
fn optional<T>(parsed: Option<Result<T, FieldError>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match parsed? {
        Ok(value) => Some(value),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_numeric_10_2() {
        assert_eq!(
            parse_price("500000.00").unwrap().to_plain_string(),
            "500000.00"
        );
        assert_eq!(parse_price("19.9").unwrap().to_plain_string(), "19.90");
        assert_eq!(parse_price("7").unwrap().to_plain_string(), "7.00");
        assert_eq!(
            parse_price("99999999.99").unwrap().to_plain_string(),
            "99999999.99"
        );
        assert_eq!(parse_price("-0").unwrap().to_plain_string(), "0.00");
        assert_eq!(parse_price("+.5").unwrap().to_plain_string(), "0.50");
        assert_eq!(parse_price("007.").unwrap().to_plain_string(), "7.00");
        for (raw, rule) in [
            ("abc", "must be a decimal number"),
            ("", "must be a decimal number"),
            ("1e5", "must be a decimal number"),
            ("NaN", "must be a decimal number"),
            ("-1", "must not be negative"),
            ("1.005", "at most 2 decimal places"),
            ("100000000", "at most 8 digits"),
            (" 5", "must be a decimal number"),
            ("5\n", "must be a decimal number"),
        ] {
            let e = parse_price(raw).unwrap_err();
            assert!(e.rule.contains(rule), "{raw}: {}", e.rule);
        }
    }

    #[test]
    fn titles_and_locations_are_bounded_in_characters() {
        assert_eq!(parse_title("  Beach house ").unwrap(), "Beach house");
        assert_eq!(
            parse_title("\u{200B}\u{FEFF}").unwrap_err().rule,
            "must not be empty"
        );
        assert!(
            parse_title(&format!(" {}", "x".repeat(200)))
                .unwrap_err()
                .rule
                .contains("at most 200"),
            "lengths count the value as sent"
        );
        assert!(parse_title("a\nb").unwrap_err().rule.contains("control"));
        assert!(parse_title(&"é".repeat(200)).is_ok());
        assert!(
            parse_title(&"é".repeat(201))
                .unwrap_err()
                .rule
                .contains("at most 200")
        );
        assert!(
            parse_title("   ")
                .unwrap_err()
                .rule
                .contains("must not be empty")
        );
        assert!(
            parse_location(&"x".repeat(101))
                .unwrap_err()
                .rule
                .contains("at most 100")
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let errors = NewProperty::parse(PropertyInput {
            title: None,
            description: Some("d"),
            price: Some("-3"),
            location: Some(""),
        })
        .unwrap_err();
        assert_eq!(
            errors.to_string(),
            "title: is required; price: must not be negative; location: must not be empty"
        );
    }
}
