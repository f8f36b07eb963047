//! What each cached entry depends on, and what each write changes, as *tags*: a write
//! retires exactly the entries that share a tag with it (see `clock`). The rules, one
//! function each, are why a write retires every entry whose result it can change and
//! only those it can reach through one of these tags:
//!
//! - **membership** (a page's count, and which rows it may show): one counter per
//!   filter shape: everything; a location; a price band; a location and a price band.
//!   A page depends on the counters its filter covers (a price range covers the bands it
//!   overlaps); a write bumps the ones whose membership it changed: a create or a
//!   delete, a location change (from and to). A price change moves a row into or out of
//!   a price range only by passing one of its bounds, so a ranged page also depends on
//!   the order tags (below) of its bounds' bands;
//! - **items**: a page depends on the rows it shows; every write bumps the row it wrote;
//! - **order**: a page ordered by price depends on the price bands between its first
//!   and its last row; a price change bumps every band between its old and its new price
//!   (the rows it passes on the way shift by one place). `created_at` and `id` never
//!   change, so pages in those orders have no such tag;
//! - **search** (a substring of the title or description, which any write can change):
//!   one counter for everything and one per location, bumped by every write.
//!
//! Locations are hashed into buckets and prices into log-spaced bands: a shared bucket
//! or band only retires more than needed, never less. Every entry also depends on
//! [`ALL`], which retires everything at once (a restart, a recovery, a change that cannot
//! be attributed to rows). `tests` checks the rules against every result a small table
//! can give.

use crate::domain::price_band::{self, band};
use crate::domain::{PropertyPage, PropertyQuery, SortOrder};
use crate::domain::{RowChange, RowFacts};
use crate::stable_hash::fnv1a64;

/// Location keys hash into this many buckets.
const LOCATION_BUCKETS: u32 = 256;
/// Prices fall into this many log-spaced bands (see `domain::price_band`).
const PRICE_BANDS: u32 = price_band::BANDS;
/// Property ids hash into this many buckets: a page of 20 rows shares one with a
/// random write about once in 800.
const ITEM_BUCKETS: u32 = 16384;

/// One counter a cached entry can depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(u32);

/// Every entry depends on it: bumping it retires everything.
pub const ALL: Tag = Tag(0);
const ANY_ROW: u32 = 1;
const EVERY_ROW: u32 = 2;
const LOCATION_ROWS: u32 = 3;
const LOCATION_ANY: u32 = LOCATION_ROWS + LOCATION_BUCKETS;
const BAND_ROWS: u32 = LOCATION_ANY + LOCATION_BUCKETS;
const CELL_ROWS: u32 = BAND_ROWS + PRICE_BANDS;
const PRICE_ORDER: u32 = CELL_ROWS + LOCATION_BUCKETS * PRICE_BANDS;
const LOCATION_PRICE_ORDER: u32 = PRICE_ORDER + PRICE_BANDS;
const ITEM: u32 = LOCATION_PRICE_ORDER + LOCATION_BUCKETS * PRICE_BANDS;

impl Tag {
    /// How many tags there are: a clock keeps one counter each.
    pub const COUNT: usize = (ITEM + ITEM_BUCKETS) as usize;

    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The tag of a number [`Tag::index`] gave, if it is one.
    pub fn from_index(index: u64) -> Option<Tag> {
        u32::try_from(index)
            .ok()
            .filter(|i| (*i as usize) < Tag::COUNT)
            .map(Tag)
    }
}

/// Tags in ascending order, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagSet(Vec<Tag>);

impl TagSet {
    fn from_vec(mut tags: Vec<Tag>) -> TagSet {
        tags.sort_unstable();
        tags.dedup();
        tags.shrink_to_fit();
        TagSet(tags)
    }

    /// Only [`ALL`]. As an entry's tags: only a whole retirement retires it (a value
    /// whose freshness is checked elsewhere). As a write's: it retires everything (a
    /// change that cannot be attributed to rows).
    pub fn all() -> TagSet {
        TagSet(vec![ALL])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Tag> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn contains(&self, tag: Tag) -> bool {
        self.0.binary_search(&tag).is_ok()
    }

    /// Whether a write with `self`'s tags retires an entry with `other`'s (what a clock
    /// decides by numbers).
    #[cfg(test)]
    fn intersects(&self, other: &TagSet) -> bool {
        self.contains(ALL) || other.iter().any(|tag| self.contains(tag))
    }

    /// Both sets in one.
    pub fn union(&self, other: &TagSet) -> TagSet {
        TagSet::from_vec(self.iter().chain(other.iter()).collect())
    }
}

impl IntoIterator for TagSet {
    type Item = Tag;
    type IntoIter = std::vec::IntoIter<Tag>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<Tag> for TagSet {
    fn from_iter<I: IntoIterator<Item = Tag>>(tags: I) -> TagSet {
        TagSet::from_vec(tags.into_iter().collect())
    }
}

fn location_bucket(location_key: &str) -> u32 {
    (fnv1a64(location_key.as_bytes()) % u64::from(LOCATION_BUCKETS)) as u32
}

fn item(id: i64) -> Tag {
    Tag(ITEM + id.rem_euclid(i64::from(ITEM_BUCKETS)) as u32)
}

fn location_rows(bucket: u32) -> Tag {
    Tag(LOCATION_ROWS + bucket)
}

fn location_any(bucket: u32) -> Tag {
    Tag(LOCATION_ANY + bucket)
}

fn band_rows(band: u32) -> Tag {
    Tag(BAND_ROWS + band)
}

fn cell_rows(bucket: u32, band: u32) -> Tag {
    Tag(CELL_ROWS + bucket * PRICE_BANDS + band)
}

fn price_order(location: Option<u32>, band: u32) -> Tag {
    match location {
        None => Tag(PRICE_ORDER + band),
        Some(bucket) => Tag(LOCATION_PRICE_ORDER + bucket * PRICE_BANDS + band),
    }
}

/// Where a row is: its location's bucket (none without a key) and its price's band.
fn place(row: &RowFacts) -> (Option<u32>, u32) {
    (
        row.location_key.as_deref().map(location_bucket),
        band(&row.price),
    )
}

/// The bands a query's price bounds cover; `None` when no price can match.
fn bands_of(query: &PropertyQuery) -> Option<std::ops::RangeInclusive<u32>> {
    if let (Some(min), Some(max)) = (&query.min_price, &query.max_price)
        && min > max
    {
        return None;
    }
    let low = query.min_price.as_ref().map_or(0, band);
    let high = query.max_price.as_ref().map_or(PRICE_BANDS - 1, band);
    Some(low..=high)
}

/// What a search depends on before its rows are known: its filter's membership.
pub fn query_tags(query: &PropertyQuery) -> TagSet {
    let location = query.location.as_deref().map(location_bucket);
    let ranged = query.has_price_range();
    let mut tags = vec![ALL];
    match (&query.search, location, ranged) {
        // A search matches text any write can change.
        (Some(_), None, _) => tags.push(Tag(ANY_ROW)),
        (Some(_), Some(bucket), _) => tags.push(location_any(bucket)),
        (None, None, false) => tags.push(Tag(EVERY_ROW)),
        (None, Some(bucket), false) => tags.push(location_rows(bucket)),
        (None, location, true) => {
            // Crossed bounds (min above max): nothing ever matches.
            if let Some(bands) = bands_of(query) {
                // A price crossing a bound passes through the bound's band.
                let bounds = [&query.min_price, &query.max_price];
                tags.extend(
                    bounds
                        .into_iter()
                        .flatten()
                        .map(|b| price_order(location, band(b))),
                );
                tags.extend(bands.map(|band| match location {
                    None => band_rows(band),
                    Some(bucket) => cell_rows(bucket, band),
                }));
            }
        }
    }
    TagSet::from_vec(tags)
}

/// What a page of a search depends on: its filter, the rows it shows and, in price
/// order, the bands its rows span.
pub fn page_tags(query: &PropertyQuery, page: &PropertyPage) -> TagSet {
    let mut tags = query_tags(query).0;
    tags.extend(page.data.iter().map(|row| item(row.id)));
    let by_price = matches!(query.ordering, SortOrder::PriceAsc | SortOrder::PriceDesc);
    let prices = page.data.iter().map(|row| &row.price);
    if let (true, Some(lowest), Some(highest)) = (by_price, prices.clone().min(), prices.max()) {
        let location = query.location.as_deref().map(location_bucket);
        tags.extend((band(lowest)..=band(highest)).map(|b| price_order(location, b)));
    }
    TagSet::from_vec(tags)
}

/// What one property depends on.
pub fn item_tags(id: i64) -> TagSet {
    TagSet::from_vec(vec![ALL, item(id)])
}

/// What a write changed, from the row before it (`None` for a create) and after it
/// (`None` for a delete). Rows with different ids are a delete and a create.
pub fn write_tags(old: Option<&RowFacts>, new: Option<&RowFacts>) -> TagSet {
    let mut tags = vec![Tag(ANY_ROW)];
    let (old, new) = match (old, new) {
        (Some(old), Some(new)) if old.id != new.id => {
            let mut both = write_tags(Some(old), None).0;
            both.extend(write_tags(None, Some(new)).0);
            return TagSet::from_vec(both);
        }
        pair => pair,
    };
    for row in old.iter().chain(new.iter()) {
        tags.push(item(row.id));
        if let Some(bucket) = place(row).0 {
            tags.push(location_any(bucket));
        }
    }
    // The membership counters of a row that appeared or vanished, or (only its location
    // ones) moved to another location.
    fn members(tags: &mut Vec<Tag>, row: &RowFacts, created_or_deleted: bool) {
        let (bucket, band) = place(row);
        tags.extend(bucket.map(location_rows));
        tags.extend(bucket.map(|bucket| cell_rows(bucket, band)));
        if created_or_deleted {
            tags.push(band_rows(band));
        }
    }
    match (old, new) {
        (Some(old), Some(new)) => {
            if old.location_key != new.location_key {
                members(&mut tags, old, false);
                members(&mut tags, new, false);
            }
            if old.price != new.price {
                let (low, high) = (band(&old.price), band(&new.price));
                for b in low.min(high)..=low.max(high) {
                    tags.push(price_order(None, b));
                    for row in [old, new] {
                        if let Some(bucket) = place(row).0 {
                            tags.push(price_order(Some(bucket), b));
                        }
                    }
                }
            }
        }
        (Some(row), None) | (None, Some(row)) => {
            tags.push(Tag(EVERY_ROW));
            members(&mut tags, row, true);
        }
        (None, None) => {}
    }
    TagSet::from_vec(tags)
}

/// What a change another process made changed: as [`write_tags`], or everything when
/// its `created_at` moved (no tag follows that order).
pub fn change_tags(change: &RowChange) -> TagSet {
    if change.created_at_changed {
        return TagSet::all();
    }
    write_tags(change.before.as_ref(), change.after.as_ref())
}

#[cfg(test)]
mod tests;
