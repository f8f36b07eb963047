//! A property search as parsed from a query string (or CLI flags): every known
//! parameter validated, given once; an unknown one refused (a misspelt or miscased
//! filter must not silently match everything), except the tracking parameters links
//! get decorated with, which are ignored; and one canonical form, so that reordered or
//! decorated query strings share one cache entry.

use std::fmt;

use bigdecimal::BigDecimal;

use super::property::{FieldError, parse_amount};
use super::text;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const MAX_PAGE: u32 = 1_000_000;
pub const MAX_FILTER_CHARS: usize = 200;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    PriceAsc,
    PriceDesc,
    CreatedAtAsc,
    #[default]
    CreatedAtDesc,
    IdAsc,
    IdDesc,
}

impl SortOrder {
    pub const ALL: [SortOrder; 6] = [
        SortOrder::PriceAsc,
        SortOrder::PriceDesc,
        SortOrder::CreatedAtAsc,
        SortOrder::CreatedAtDesc,
        SortOrder::IdAsc,
        SortOrder::IdDesc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::PriceAsc => "price",
            SortOrder::PriceDesc => "-price",
            SortOrder::CreatedAtAsc => "created_at",
            SortOrder::CreatedAtDesc => "-created_at",
            SortOrder::IdAsc => "id",
            SortOrder::IdDesc => "-id",
        }
    }

    pub fn parse(raw: &str) -> Result<SortOrder, FieldError> {
        SortOrder::ALL
            .into_iter()
            .find(|o| o.as_str() == raw)
            .ok_or_else(|| FieldError {
                field: "ordering",
                rule: "must be one of price, -price, created_at, -created_at, id, -id".into(),
            })
    }
}

impl fmt::Display for SortOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Filters, order and page. Text filters are stored lower-cased: they match
/// case-insensitively, so `Malindi` and `malindi` are one query and one cache entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyQuery {
    /// Exact location, case-insensitive.
    pub location: Option<String>,
    pub min_price: Option<BigDecimal>,
    pub max_price: Option<BigDecimal>,
    /// Substring of title or description, case-insensitive.
    pub search: Option<String>,
    pub ordering: SortOrder,
    /// From 1.
    pub page: u32,
    pub page_size: u32,
}

impl Default for PropertyQuery {
    fn default() -> Self {
        PropertyQuery {
            location: None,
            min_price: None,
            max_price: None,
            search: None,
            ordering: SortOrder::default(),
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Digits only, as sent: no sign, no spaces.
fn whole_number(
    field: &'static str,
    raw: &str,
    min: u32,
    max: u32,
    rule: &str,
) -> Result<u32, FieldError> {
    Some(raw)
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u32>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| FieldError {
            field,
            rule: rule.into(),
        })
}

/// A text filter as sent, lower-cased for matching; single-line text rules apply.
fn text_filter(field: &'static str, value: &str) -> Result<Option<String>, FieldError> {
    let rule = if let Some(rule) = text::single_line_violation(value) {
        rule
    } else if text::is_blank_text(value) {
        EMPTY_RULE.to_owned()
    } else if value.chars().count() > MAX_FILTER_CHARS {
        format!("must be at most {MAX_FILTER_CHARS} characters")
    } else {
        return Ok(Some(text::match_key(text::trim(value))));
    };
    Err(FieldError { field, rule })
}

/// Every parameter, when given, must have a value: `?location=` is an error, not a
/// silent "no filter" that a typo in a client could cause.
const EMPTY_RULE: &str = "must not be empty (leave the parameter out instead)";

impl PropertyQuery {
    /// The parameters a search understands.
    pub const PARAMETERS: [&'static str; 7] = [
        "location",
        "min_price",
        "max_price",
        "search",
        "ordering",
        "page",
        "page_size",
    ];

    /// Parses `key=value` pairs (already percent-decoded), each value as sent. Unknown
    /// keys are ignored; a repeated key keeps its last value; an empty value is an error
    /// for every known parameter. `min_price` above `max_price` is no error: nothing
    /// matches. Reports the first broken rule.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<PropertyQuery, FieldError> {
        let mut query = PropertyQuery::default();
        let mut given: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let field = match Self::PARAMETERS.iter().find(|p| **p == key) {
                Some(field) if given.contains(field) => {
                    return Err(FieldError {
                        field,
                        rule: "given more than once (give it once)".into(),
                    });
                }
                Some(field) => field,
                None if is_tracking_parameter(key) => continue,
                None => return Err(unknown_parameter(key)),
            };
            given.push(field);
            if value.is_empty() {
                return Err(FieldError {
                    field,
                    rule: EMPTY_RULE.into(),
                });
            }
            match key {
                "location" => query.location = text_filter("location", value)?,
                "search" => query.search = text_filter("search", value)?,
                "min_price" => query.min_price = Some(parse_amount("min_price", value)?),
                "max_price" => query.max_price = Some(parse_amount("max_price", value)?),
                "ordering" => query.ordering = SortOrder::parse(value)?,
                "page" => {
                    query.page = whole_number(
                        "page",
                        value,
                        1,
                        MAX_PAGE,
                        "must be a whole number from 1 to 1000000",
                    )?
                }
                "page_size" => {
                    query.page_size = whole_number(
                        "page_size",
                        value,
                        1,
                        MAX_PAGE_SIZE,
                        "must be a whole number from 1 to 1000",
                    )?
                }
                _ => {}
            }
        }
        Ok(query)
    }

    /// Parses a raw (percent-encoded) query string.
    pub fn from_query_string(raw: &str) -> Result<PropertyQuery, FieldError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        PropertyQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The first page of everything in the default order: the `all_properties` entry.
    pub fn is_default_listing(&self) -> bool {
        *self == PropertyQuery::default()
    }

    /// Whether the search has a lower or an upper price bound.
    pub fn has_price_range(&self) -> bool {
        self.min_price.is_some() || self.max_price.is_some()
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }

    /// The parameters that differ from the defaults, in a fixed order and encoding.
    pub fn canonical(&self) -> String {
        self.canonical_of_page(self.page)
    }

    /// [`PropertyQuery::canonical`] of the same search's `page`.
    fn canonical_of_page(&self, page: u32) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        if let Some(location) = &self.location {
            out.append_pair("location", location);
        }
        if let Some(min) = &self.min_price {
            out.append_pair("min_price", &min.to_plain_string());
        }
        if let Some(max) = &self.max_price {
            out.append_pair("max_price", &max.to_plain_string());
        }
        if let Some(search) = &self.search {
            out.append_pair("search", search);
        }
        if self.ordering != SortOrder::default() {
            out.append_pair("ordering", self.ordering.as_str());
        }
        if page != 1 {
            out.append_pair("page", &page.to_string());
        }
        if self.page_size != DEFAULT_PAGE_SIZE {
            out.append_pair("page_size", &self.page_size.to_string());
        }
        out.finish()
    }

    /// The list URL of `page` with the same filters, order and page size.
    pub fn url_of_page(&self, page: u32) -> String {
        let query = self.canonical_of_page(page);
        if query.is_empty() {
            "/properties/".to_owned()
        } else {
            format!("/properties/?{query}")
        }
    }

    /// `(previous, next)` page URLs for `count` matching rows.
    pub fn neighbours(&self, count: i64) -> (Option<String>, Option<String>) {
        let previous = (self.page > 1).then(|| self.url_of_page(self.page - 1));
        let seen = i64::from(self.page) * i64::from(self.page_size);
        let next = (seen < count).then(|| self.url_of_page(self.page + 1));
        (previous, next)
    }
}

/// Parameters marketing and analytics add to links (`utm_source`, `fbclid`, …) and
/// cache busters (`_`): ignored, so a decorated link still finds its page.
fn is_tracking_parameter(key: &str) -> bool {
    key.starts_with("utm_")
        || matches!(
            key,
            "fbclid" | "gclid" | "msclkid" | "mc_cid" | "mc_eid" | "_"
        )
}

fn unknown_parameter(key: &str) -> FieldError {
    let shown: String = key
        .chars()
        .take(40)
        .collect::<String>()
        .escape_default()
        .to_string();
    let lower = key.to_ascii_lowercase();
    let hint = PropertyQuery::PARAMETERS
        .iter()
        .find(|p| **p == lower)
        .map(|p| format!(" (parameters are lowercase: `{p}`)"))
        .unwrap_or_else(|| format!(" (known: {})", PropertyQuery::PARAMETERS.join(", ")));
    FieldError {
        field: "query",
        rule: format!("unknown parameter `{shown}`{hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_unknown_parameters_do_not_change_the_canonical_form() {
        let a =
            PropertyQuery::from_query_string("location=Malindi&min_price=100&utm_source=x&page=2")
                .unwrap();
        let b =
            PropertyQuery::from_query_string("page=2&fbclid=1&min_price=100.00&location=malindi")
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.canonical(), "location=malindi&min_price=100.00&page=2");
        assert!(
            PropertyQuery::from_query_string("utm_source=x")
                .unwrap()
                .is_default_listing()
        );
        assert!(
            PropertyQuery::from_query_string("page=1&page_size=100&ordering=-created_at")
                .unwrap()
                .is_default_listing()
        );
    }

    #[test]
    fn unknown_miscased_and_repeated_parameters_are_refused_by_name() {
        let miscased = PropertyQuery::from_query_string("Location=thika").unwrap_err();
        assert_eq!(miscased.field, "query");
        assert!(miscased.rule.contains("`Location`"), "{}", miscased.rule);
        assert!(miscased.rule.contains("`location`"), "{}", miscased.rule);
        let unknown = PropertyQuery::from_query_string("colour=red").unwrap_err();
        assert!(
            unknown.rule.contains("unknown parameter `colour`"),
            "{}",
            unknown.rule
        );
        let twice = PropertyQuery::from_query_string("page=1&page=2").unwrap_err();
        assert_eq!(
            (twice.field, twice.rule.as_str()),
            ("page", "given more than once (give it once)")
        );
        let nul = PropertyQuery::from_query_string("a%00b=1").unwrap_err();
        assert!(nul.rule.contains("a\\u{0}b"), "shown escaped: {}", nul.rule);
        for tracked in ["utm_campaign=x", "gclid=1", "_=1700000000"] {
            assert!(
                PropertyQuery::from_query_string(tracked).is_ok(),
                "{tracked}"
            );
        }
    }

    #[test]
    fn invalid_values_name_the_parameter_and_rule() {
        for (raw, field, rule) in [
            ("page=0", "page", "from 1"),
            ("page=abc", "page", "whole number"),
            ("page_size=5000", "page_size", "from 1 to 1000"),
            ("min_price=abc", "min_price", "decimal number"),
            ("max_price=-1", "max_price", "negative"),
            ("ordering=foo", "ordering", "must be one of"),
            ("page=%2B2", "page", "whole number"),
            ("page=%202", "page", "whole number"),
            ("location=", "location", "must not be empty"),
            ("ordering=", "ordering", "must not be empty"),
            ("search=%E2%80%8B", "search", "must not be empty"),
            ("search=a%00b", "search", "control characters (found NUL)"),
            (
                "location=%1B",
                "location",
                "control characters (found U+001B)",
            ),
        ] {
            let e = PropertyQuery::from_query_string(raw).unwrap_err();
            assert_eq!(e.field, field, "{raw}");
            assert!(e.rule.contains(rule), "{raw}: {}", e.rule);
        }
    }

    #[test]
    fn an_empty_value_is_refused_for_every_parameter_and_ignored_for_others() {
        for parameter in PropertyQuery::PARAMETERS {
            let e = PropertyQuery::from_query_string(&format!("{parameter}=")).unwrap_err();
            assert_eq!(e.field, parameter);
        }
        assert!(
            PropertyQuery::from_query_string("utm_source=")
                .unwrap()
                .is_default_listing()
        );
        let crossed = PropertyQuery::from_query_string("min_price=10&max_price=5").unwrap();
        assert!(
            crossed.min_price > crossed.max_price,
            "no error: nothing matches"
        );
    }

    #[test]
    fn neighbours_keep_the_query() {
        let q = PropertyQuery::from_query_string("search=sea&page=2&page_size=10").unwrap();
        assert_eq!(
            q.neighbours(35),
            (
                Some("/properties/?search=sea&page_size=10".to_owned()),
                Some("/properties/?search=sea&page=3&page_size=10".to_owned())
            )
        );
        assert_eq!(q.neighbours(20).1, None);
        assert_eq!(PropertyQuery::default().neighbours(5), (None, None));
    }
}
