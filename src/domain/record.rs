//! Rows as the application sees them, identical on both backends, and their JSON form:
//! price as a string with exactly two decimals, created_at as RFC 3339 UTC.

use bigdecimal::{BigDecimal, RoundingMode};
use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
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

impl PropertyPage {
    /// The page's JSON, as serde_json writes it (the fields in order, strings escaped
    /// alike), appended to `out`. A cache miss writes its page once, with strings that
    /// need no escaping (nearly all) copied whole: serde_json's escaping, byte by byte,
    /// was a tenth of a miss's instructions.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"count\":");
        out.extend_from_slice(self.count.to_string().as_bytes());
        out.extend_from_slice(b",\"data\":[");
        for (at, row) in self.data.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            row.write_json(out);
        }
        out.extend_from_slice(b"]}");
    }
}

impl Property {
    /// The row's JSON, as serde_json writes it (see [`PropertyPage::write_json`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(self.id.to_string().as_bytes());
        let (mut price, mut time) = ([0; 24], [0; 27]);
        let fields = [
            (&b",\"title\":"[..], self.title.as_str()),
            (b",\"description\":", &self.description),
            (b",\"price\":", &format_price(&self.price, &mut price)),
            (b",\"location\":", &self.location),
            (
                b",\"created_at\":",
                &format_time(&self.created_at, &mut time),
            ),
        ];
        for (name, value) in fields {
            out.extend_from_slice(name);
            write_json_string(out, value);
        }
        out.push(b'}');
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it: copied whole when no
/// byte needs it (a quote, a backslash, a control character).
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Without an early exit, so that it is compiled to vector instructions.
    let escaped = text.bytes().fold(false, |escaped, byte| {
        escaped | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    });
    if !escaped {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        // Writing to a Vec cannot fail; a string is always serializable.
        out.extend_from_slice(b"\"\"");
    }
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
        format_price(&self.price, &mut [0; 24]).into_owned()
    }

    /// SQLite hands NUMERIC back as a float (19.99 reads as 19.98999…); rounding to the
    /// column's scale restores the exact value on SQLite and changes nothing on PostgreSQL.
    pub fn normalized(mut self) -> Self {
        self.price = self.price.with_scale_round(2, RoundingMode::HalfEven);
        self
    }
}

/// `value`'s decimal digits, at least `width` of them (zeros in front), ending at
/// `end` in `buffer`; where they begin.
fn digits_before(buffer: &mut [u8], end: usize, mut value: u64, width: usize) -> usize {
    let mut at = end;
    while value > 0 || end - at < width.max(1) {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    at
}

/// The price with exactly two decimals. Rows are read with their price in cents: those
/// are written out at once, in `buffer` (bigdecimal's own formatting took 3 % of a
/// server's time on bench/mix's misses, `format!` a third of what was left).
fn format_price<'a>(price: &BigDecimal, buffer: &'a mut [u8; 24]) -> Cow<'a, str> {
    let (digits, scale) = price.as_bigint_and_scale();
    if scale == 2
        && let Some(cents) = bigdecimal::ToPrimitive::to_u64(digits.as_ref())
    {
        let end = buffer.len();
        let decimals = digits_before(buffer, end, cents % 100, 2);
        buffer[decimals - 1] = b'.';
        let start = digits_before(buffer, decimals - 1, cents / 100, 1);
        if let Ok(text) = std::str::from_utf8(&buffer[start..]) {
            return Cow::Borrowed(text);
        }
    }
    Cow::Owned(
        price
            .with_scale_round(2, RoundingMode::HalfEven)
            .to_plain_string(),
    )
}

mod price_string {
    use super::*;

    pub fn serialize<S: Serializer>(price: &BigDecimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_price(price, &mut [0; 24]))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigDecimal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `at` as RFC 3339 in UTC with microseconds (`2026-11-26T10:00:00.123456Z`), written
/// in `buffer` for the years 0 to 9999, by chrono otherwise (and for a leap second).
fn format_time<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; 27]) -> Cow<'a, str> {
    let nanos = at.nanosecond();
    let year = at.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return Cow::Owned(at.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    *buffer = *b"0000-00-00T00:00:00.000000Z";
    let fields = [
        (4, year as u32, 4),
        (7, at.month(), 2),
        (10, at.day(), 2),
        (13, at.hour(), 2),
        (16, at.minute(), 2),
        (19, at.second(), 2),
        (26, nanos / 1000, 6),
    ];
    for (end, value, width) in fields {
        digits_before(buffer, end, u64::from(value), width);
    }
    match std::str::from_utf8(buffer) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(at.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

mod rfc3339_micros {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(at, &mut [0; 27]))
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
            "184467440737095516.15",
        ] {
            let price: BigDecimal = text.parse().unwrap();
            let general = price
                .with_scale_round(2, RoundingMode::HalfEven)
                .to_plain_string();
            assert_eq!(format_price(&price, &mut [0; 24]), general, "{text}");
            let cents = price.with_scale_round(2, RoundingMode::HalfEven);
            assert_eq!(
                format_price(&cents, &mut [0; 24]),
                general,
                "{text} in cents"
            );
        }
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let chrono = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut seconds: i64 = 1;
        for step in 0..200_i64 {
            seconds = seconds
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(step);
            let within = seconds.rem_euclid(253_402_300_800);
            let nanos = (seconds.rem_euclid(1_000_000_000)) as u32;
            let at = DateTime::from_timestamp(within, nanos).unwrap();
            assert_eq!(format_time(&at, &mut [0; 27]), chrono(&at));
        }
        let edges = [
            DateTime::from_timestamp(0, 0).unwrap(),
            DateTime::from_timestamp(-62_167_219_200, 0).unwrap(),
            DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap(),
            DateTime::from_timestamp(253_402_300_800, 0).unwrap(),
            DateTime::from_timestamp(-62_167_219_201, 0).unwrap(),
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        for at in edges {
            assert_eq!(format_time(&at, &mut [0; 27]), chrono(&at), "{at:?}");
        }
    }

    #[test]
    fn a_page_is_written_as_serde_json_writes_it() {
        let row = |id, title: &str| Property {
            id,
            title: title.into(),
            description: "Sea view, \u{e9}t\u{e9} \u{1F3E0} \u{7f}".into(),
            price: "125000.5".parse::<BigDecimal>().unwrap(),
            location: "O'Hara".into(),
            created_at: DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
        };
        let tricky = [
            "plain",
            "a \"quote\"",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{0}\u{1f}\u{8}\u{c}",
            "",
        ];
        for count in [0, 1, -1, i64::MAX] {
            for rows in [0, 1, tricky.len()] {
                let page = PropertyPage {
                    count,
                    data: (0..rows).map(|i| row(i as i64 - 1, tricky[i])).collect(),
                };
                let mut written = Vec::new();
                page.write_json(&mut written);
                let expected = serde_json::to_vec(&page).unwrap();
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }
}
