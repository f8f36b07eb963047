//! Rows as the application sees them, identical on both backends, and their JSON form:
//! price as a string with exactly two decimals, created_at as RFC 3339 UTC.

use bigdecimal::{BigDecimal, RoundingMode};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::Queryable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Queryable, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Property {
    #[schema(example = 1)]
    pub id: i64,
    #[schema(example = "Beach villa")]
    pub title: String,
    #[schema(example = "Four bedrooms, sea view")]
    pub description: String,
    /// Exact decimal with two places, as a string.
    #[serde(with = "price_string")]
    #[schema(value_type = String, example = "500000.00")]
    pub price: BigDecimal,
    #[schema(example = "Malindi")]
    pub location: String,
    /// RFC 3339, UTC.
    #[serde(with = "rfc3339_micros")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-26T10:00:00.123456Z")]
    pub created_at: DateTime<Utc>,
}

/// One page of a property search and how many rows match in all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyPage {
    pub count: i64,
    pub data: Vec<Property>,
}

/// What cache invalidation needs to know of a row as it was before a write, or as a
/// write left it: where it is (its location key, as location filters compare it, and
/// its price) and which row it is.
#[derive(Clone, Debug, PartialEq, Eq, Queryable)]
pub struct RowFacts {
    pub id: i64,
    /// `None`: a row written by another program whose key is not set yet, which no
    /// location filter matches.
    pub location_key: Option<String>,
    pub price: BigDecimal,
}

impl RowFacts {
    /// As [`Property::normalized`]: SQLite's floats rounded back to the column's scale.
    pub fn normalized(mut self) -> Self {
        self.price = self.price.with_scale_round(2, RoundingMode::HalfEven);
        self
    }
}

/// What one write did to one row, as a process that did not make it learns it (the
/// database's notification or change log): the row before (`None` for an insert) and
/// after (`None` for a delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    pub before: Option<RowFacts>,
    pub after: Option<RowFacts>,
    /// `created_at` changed too (only a program other than `listings` does that).
    pub created_at_changed: bool,
}

impl Property {
    /// The price as it is sent to clients: exactly two decimals.
    pub fn price_text(&self) -> String {
        format_price(&self.price)
    }

    /// SQLite hands NUMERIC back as a float (19.99 reads as 19.98999…); rounding to the
    /// column's scale restores the exact value on SQLite and changes nothing on PostgreSQL.
    pub fn normalized(mut self) -> Self {
        self.price = self.price.with_scale_round(2, RoundingMode::HalfEven);
        self
    }
}

fn format_price(price: &BigDecimal) -> String {
    // Rows are read with their price in cents: written out at once. bigdecimal's own
    // formatting took 3 % of a server's time on bench/mix's misses.
    let (digits, scale) = price.as_bigint_and_scale();
    if scale == 2
        && let Some(cents) = bigdecimal::ToPrimitive::to_u64(digits.as_ref())
    {
        return format!("{}.{:02}", cents / 100, cents % 100);
    }
    price
        .with_scale_round(2, RoundingMode::HalfEven)
        .to_plain_string()
}

mod price_string {
    use super::*;

    pub fn serialize<S: Serializer>(price: &BigDecimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_price(price))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigDecimal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod rfc3339_micros {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_is_exact() {
        let property = Property {
            id: 1,
            title: "Villa".into(),
            description: "Sea view".into(),
            price: "19.98999999999".parse::<BigDecimal>().unwrap(),
            location: "Malindi".into(),
            created_at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        }
        .normalized();
        let json = serde_json::to_string(&property).unwrap();
        assert_eq!(
            json,
            r#"{"id":1,"title":"Villa","description":"Sea view","price":"19.99","location":"Malindi","created_at":"2026-11-26T10:00:00.123456Z"}"#
        );
        assert_eq!(serde_json::from_str::<Property>(&json).unwrap(), property);
    }

    #[test]
    fn prices_in_cents_are_written_as_any_other() {
        for text in [
            "0",
            "0.5",
            "0.05",
            "7",
            "19.99",
            "100.00",
            "99999999.99",
            "-0.01",
            "-12.5",
            "1.005",
            "2.675",
            "18446744073709551616.00",
        ] {
            let price: BigDecimal = text.parse().unwrap();
            let general = price
                .with_scale_round(2, RoundingMode::HalfEven)
                .to_plain_string();
            assert_eq!(format_price(&price), general, "{text}");
            let cents = price.with_scale_round(2, RoundingMode::HalfEven);
            assert_eq!(format_price(&cents), general, "{text} in cents");
        }
    }
}
