//! The rules checked against every answer a small table gives: for random tables,
//! writes and searches, whenever a write changes a search's page (its rows, their
//! order or content, or its count) or a property, the write's tags meet the entry's.
//! And the other way round, a few writes that must leave a page alone do.

use std::str::FromStr as _;

use bigdecimal::BigDecimal;
use chrono::{TimeZone as _, Utc};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::*;
use crate::domain::Property;

#[derive(Clone, Debug, PartialEq)]
struct Row {
    id: i64,
    location_key: Option<String>,
    price: BigDecimal,
    title: String,
    /// Insertion order: what `created_at` sorts by.
    created: i64,
}

impl Row {
    fn facts(&self) -> RowFacts {
        RowFacts {
            id: self.id,
            location_key: self.location_key.clone(),
            price: self.price.clone(),
        }
    }

    fn property(&self) -> Property {
        Property {
            id: self.id,
            title: self.title.clone(),
            description: String::new(),
            price: self.price.clone(),
            location: self.location_key.clone().unwrap_or_default(),
            created_at: Utc.timestamp_opt(self.created, 0).unwrap(),
        }
    }
}

/// What the repository answers, computed the slow way.
fn answer(rows: &[Row], query: &PropertyQuery) -> PropertyPage {
    let mut matching: Vec<&Row> =
        rows.iter()
            .filter(|row| {
                query
                    .location
                    .as_ref()
                    .is_none_or(|l| row.location_key.as_ref() == Some(l))
                    && query.min_price.as_ref().is_none_or(|min| row.price >= *min)
                    && query.max_price.as_ref().is_none_or(|max| row.price <= *max)
                    && query.search.as_ref().is_none_or(|s| {
                        crate::domain::text::match_key(&row.title).contains(s.as_str())
                    })
            })
            .collect();
    matching.sort_by(|a, b| match query.ordering {
        SortOrder::PriceAsc => (&a.price, a.id).cmp(&(&b.price, b.id)),
        SortOrder::PriceDesc => (&b.price, b.id).cmp(&(&a.price, a.id)),
        SortOrder::CreatedAtAsc => (a.created, a.id).cmp(&(b.created, b.id)),
        SortOrder::CreatedAtDesc => (b.created, b.id).cmp(&(a.created, a.id)),
        SortOrder::IdAsc => a.id.cmp(&b.id),
        SortOrder::IdDesc => b.id.cmp(&a.id),
    });
    let count = matching.len() as i64;
    let data = matching
        .into_iter()
        .skip(query.offset() as usize)
        .take(query.page_size as usize)
        .map(Row::property)
        .collect();
    PropertyPage { count, data }
}

/// Prices on both sides of band edges, and far apart.
const PRICES: [&str; 12] = [
    "0.00",
    "500.00",
    "1199.99",
    "1200.00",
    "1200.01",
    "1430.00",
    "20000.00",
    "20000.50",
    "21299.99",
    "21300.00",
    "3500000.00",
    "99999999.99",
];
const LOCATIONS: [&str; 3] = ["malindi", "lamu", "thika"];
const WORDS: [&str; 3] = ["sea", "garden", "view"];

fn price(rng: &mut StdRng) -> BigDecimal {
    BigDecimal::from_str(PRICES[rng.random_range(0..PRICES.len())]).unwrap()
}

fn location(rng: &mut StdRng) -> Option<String> {
    // Now and then a row written elsewhere whose key is not set yet.
    (rng.random_range(0..10) > 0).then(|| LOCATIONS[rng.random_range(0..3)].to_owned())
}

fn title(rng: &mut StdRng) -> String {
    format!("A {}", WORDS[rng.random_range(0..WORDS.len())])
}

fn query(rng: &mut StdRng) -> PropertyQuery {
    let mut query = PropertyQuery {
        ordering: SortOrder::ALL[rng.random_range(0..SortOrder::ALL.len())],
        page: rng.random_range(1..=4),
        page_size: rng.random_range(1..=3),
        ..PropertyQuery::default()
    };
    if rng.random_bool(0.5) {
        query.location = Some(LOCATIONS[rng.random_range(0..3)].to_owned());
    }
    if rng.random_bool(0.4) {
        query.min_price = Some(price(rng));
    }
    if rng.random_bool(0.4) {
        query.max_price = Some(price(rng));
    }
    if rng.random_bool(0.2) {
        query.search = Some(WORDS[rng.random_range(0..WORDS.len())].to_owned());
    }
    query
}

fn table(rng: &mut StdRng, next_id: &mut i64) -> Vec<Row> {
    (0..rng.random_range(0..10))
        .map(|_| new_row(rng, next_id))
        .collect()
}

fn new_row(rng: &mut StdRng, next_id: &mut i64) -> Row {
    *next_id += 1;
    Row {
        id: *next_id,
        location_key: location(rng),
        price: price(rng),
        title: title(rng),
        created: *next_id,
    }
}

/// One random write: the table after it, and the row before and after.
fn write(
    rng: &mut StdRng,
    rows: &[Row],
    next_id: &mut i64,
) -> (Vec<Row>, Option<Row>, Option<Row>) {
    let mut after = rows.to_vec();
    if rows.is_empty() || rng.random_bool(0.2) {
        let created = new_row(rng, next_id);
        after.push(created.clone());
        return (after, None, Some(created));
    }
    let at = rng.random_range(0..rows.len());
    let old = rows[at].clone();
    let mut new = old.clone();
    match rng.random_range(0..5) {
        0 => {
            after.remove(at);
            return (after, Some(old), None);
        }
        1 => new.price = price(rng),
        2 => new.location_key = location(rng),
        3 => new.title = title(rng),
        _ => {
            new.price = price(rng);
            new.location_key = location(rng);
        }
    }
    after[at] = new.clone();
    (after, Some(old), Some(new))
}

#[test]
fn a_write_meets_every_entry_whose_answer_it_changes() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut checked = 0;
    for _ in 0..4000 {
        let mut next_id = 0;
        let before = table(&mut rng, &mut next_id);
        let (after, old, new) = write(&mut rng, &before, &mut next_id);
        let written = write_tags(
            old.as_ref().map(Row::facts).as_ref(),
            new.as_ref().map(Row::facts).as_ref(),
        );
        for _ in 0..40 {
            let query = query(&mut rng);
            let was = answer(&before, &query);
            if answer(&after, &query) != was {
                checked += 1;
                assert!(
                    written.intersects(&page_tags(&query, &was)),
                    "a stale page would be served:\nquery {query:?}\nbefore {before:?}\nwrite {old:?} -> {new:?}"
                );
            }
        }
        for id in before.iter().chain(after.iter()).map(|row| row.id) {
            let find = |rows: &[Row]| rows.iter().find(|row| row.id == id).cloned();
            if find(&before) != find(&after) {
                assert!(written.intersects(&item_tags(id)), "property {id}");
            }
        }
    }
    assert!(checked > 10_000, "only {checked} changed answers checked");
}

fn facts(id: i64, location: &str, price: &str) -> RowFacts {
    RowFacts {
        id,
        location_key: Some(location.to_owned()),
        price: BigDecimal::from_str(price).unwrap(),
    }
}

fn search(query: &str) -> PropertyQuery {
    PropertyQuery::from_query_string(query).unwrap()
}

/// A page of `ids`, at prices `prices`.
fn page_of(count: i64, rows: &[(i64, &str)]) -> PropertyPage {
    let data = rows
        .iter()
        .map(|(id, price)| Row {
            id: *id,
            location_key: Some("lamu".into()),
            price: BigDecimal::from_str(price).unwrap(),
            title: "A house".into(),
            created: *id,
        })
        .map(|row| row.property())
        .collect();
    PropertyPage { count, data }
}

#[test]
fn writes_leave_alone_what_they_cannot_change() {
    let page = page_of(100, &[(1, "20000.00"), (2, "21000.00")]);
    // Another location, whatever the write.
    let lamu = search("location=lamu&ordering=price");
    let in_thika = facts(9, "thika", "20500.00");
    let moved = facts(9, "thika", "20600.00");
    assert!(!write_tags(Some(&in_thika), Some(&moved)).intersects(&page_tags(&lamu, &page)));
    assert!(!write_tags(None, Some(&in_thika)).intersects(&page_tags(&lamu, &page)));

    // The same location: a row off the page whose price moves far from the page's
    // prices reorders nothing on it, and leaves the count as it is.
    let far = facts(9, "lamu", "500000.00");
    let farther = facts(9, "lamu", "900000.00");
    assert!(!write_tags(Some(&far), Some(&farther)).intersects(&page_tags(&lamu, &page)));
    // But one that passes the page's prices does.
    let cheap = facts(9, "lamu", "20500.00");
    assert!(write_tags(Some(&far), Some(&cheap)).intersects(&page_tags(&lamu, &page)));

    // Newest first: a price change off the page changes neither order nor count.
    let newest = search("location=lamu");
    assert!(!write_tags(Some(&far), Some(&cheap)).intersects(&page_tags(&newest, &page)));
    // A location change to or from lamu changes the count of every page.
    let from_lamu = facts(9, "thika", "500000.00");
    assert!(write_tags(Some(&far), Some(&from_lamu)).intersects(&page_tags(&newest, &page)));
    // Everywhere, newest first: a location change changes no count, no order.
    let everywhere = search("ordering=-created_at");
    assert!(!write_tags(Some(&far), Some(&from_lamu)).intersects(&page_tags(&everywhere, &page)));
    // A price range the old and the new price are both far from.
    let ranged = search("min_price=1000000&max_price=2000000");
    assert!(!write_tags(Some(&far), Some(&farther)).intersects(&page_tags(&ranged, &page)));
    // A change to a row on the page retires the page and the row.
    let on_page = facts(2, "lamu", "21000.00");
    let retitled = on_page.clone();
    assert!(write_tags(Some(&on_page), Some(&retitled)).intersects(&page_tags(&newest, &page)));
    assert!(write_tags(Some(&on_page), Some(&retitled)).intersects(&item_tags(2)));
    assert!(!write_tags(Some(&on_page), Some(&retitled)).intersects(&item_tags(3)));
}

#[test]
fn tags_have_indexes_below_their_count() {
    assert!(Tag::from_index(Tag::COUNT as u64).is_none());
    assert_eq!(
        Tag::from_index(item(i64::MAX).index() as u64),
        Some(item(i64::MAX))
    );
}
