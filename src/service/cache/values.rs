//! How cached values are stored: query results as JSON, whole responses in the view
//! layer's own envelope.

use bytes::Bytes;

use crate::domain::{Property, PropertyPage};
use crate::view::CachedResponse;

pub trait CacheValue: Sized + Send {
    fn encode(&self) -> Bytes;
    /// `None` for bytes that are not a value of this type (a format change, corruption):
    /// the caller treats that as a miss.
    fn decode(bytes: Bytes) -> Option<Self>;

    /// The value a loader made, once `stored` (its encoding) is in the cache, as the
    /// caller should keep it. A response is decoded again, so that a copy kept in the
    /// near-cache shares the cache's one allocation, exactly sized, instead of holding
    /// a second copy in buffers that grew while it was rendered.
    fn kept_as(self, _stored: Bytes) -> Self {
        self
    }
}

/// Query results are stored as JSON.
macro_rules! json_value {
    ($($value:ty),+) => {$(
        impl CacheValue for $value {
            fn encode(&self) -> Bytes {
                // The cache weighs a value by its length: keep no spare capacity.
                serde_json::to_vec(self)
                    .map(|mut json| {
                        json.shrink_to_fit();
                        Bytes::from(json)
                    })
                    .unwrap_or_default()
            }

            fn decode(bytes: Bytes) -> Option<Self> {
                serde_json::from_slice(&bytes).ok()
            }
        }
    )+};
}

json_value!(PropertyPage, Property);

/// A page of a search as the data level keeps it: the page, and the JSON it is stored
/// as (`{"count":…,"data":[…]}`), which a response is written around, so that a miss
/// serializes its rows once, not once for the cache and again for the body.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPage {
    pub page: PropertyPage,
    pub json: Bytes,
}

impl StoredPage {
    pub fn new(page: PropertyPage) -> StoredPage {
        // Room for the rows as seeded listings are (about 250 bytes each): growing from
        // serde_json's 128 bytes copied the page seven times.
        let mut json = Vec::with_capacity(64 + 320 * page.data.len());
        page.write_json(&mut json);
        json.shrink_to_fit();
        StoredPage {
            page,
            json: Bytes::from(json),
        }
    }
}

impl CacheValue for StoredPage {
    fn encode(&self) -> Bytes {
        self.json.clone()
    }

    fn decode(bytes: Bytes) -> Option<Self> {
        let page = PropertyPage::decode(bytes.clone())?;
        Some(StoredPage { page, json: bytes })
    }
}

impl CacheValue for CachedResponse {
    fn encode(&self) -> Bytes {
        self.to_bytes()
    }

    fn decode(bytes: Bytes) -> Option<Self> {
        CachedResponse::from_bytes(bytes)
    }

    fn kept_as(self, stored: Bytes) -> Self {
        CachedResponse::from_bytes(stored).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Encoding;

    #[test]
    fn a_stored_page_is_its_json() {
        let page = PropertyPage {
            count: 3,
            data: Vec::new(),
        };
        let stored = StoredPage::new(page.clone());
        assert_eq!(&stored.json[..], br#"{"count":3,"data":[]}"#);
        assert_eq!(StoredPage::decode(stored.encode()), Some(stored));
        assert_eq!(StoredPage::decode(Bytes::from_static(b"{")), None);
    }

    #[test]
    fn a_rendered_response_is_kept_in_the_bytes_the_cache_stores() {
        let body = Bytes::from(r#"{"title":"Beach villa"}"#.repeat(100));
        let rendered = CachedResponse::new(200, "application/json".into(), body)
            .with_encodings(&[Encoding::Gzip, Encoding::Brotli])
            .expect("compressible");
        let stored = rendered.encode();
        let kept = rendered.clone().kept_as(stored.clone());
        assert_eq!(kept, rendered);
        let within = |part: &Bytes| {
            let range = stored.as_ptr_range();
            range.contains(&part.as_ptr()) || part.is_empty()
        };
        assert!(within(&kept.body) && within(&kept.gzip) && within(&kept.br));
    }
}
