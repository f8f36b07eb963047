//! The near-cache: whole responses kept in this process, ready to send (header values
//! built, every encoding at hand), so that a view hit costs no decoding, no allocation
//! of header values and, in Redis mode, no Redis round trip.
//!
//! An entry is kept with the generation it was rendered under and served only while
//! the cache vouches for that generation (see `Cache::near_generation`): a bump makes
//! every entry unservable at once, and the next rendering replaces it in place.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use moka::sync::Cache;

use crate::cache::values::{CachedResponse, Encoding};

/// A body and its ETag.
pub type Variant = (Bytes, HeaderValue);

/// A response as the near-cache keeps it.
pub struct ReadyView {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    identity: Variant,
    gzip: Option<Variant>,
    br: Option<Variant>,
}

impl ReadyView {
    pub fn from_cached(cached: &CachedResponse) -> ReadyView {
        // ETags are ASCII made here; an invalid one is not served rather than wrong.
        let etag = |encoding: Encoding| HeaderValue::from_str(&cached.etag_of(encoding)).ok();
        let variant =
            |encoding: Encoding| Some((cached.variant(encoding)?.clone(), etag(encoding)?));
        ReadyView {
            status: StatusCode::from_u16(cached.status).unwrap_or(StatusCode::OK),
            content_type: HeaderValue::from_str(&cached.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            identity: (
                cached.body.clone(),
                etag(Encoding::Identity).unwrap_or(HeaderValue::from_static("\"0-0\"")),
            ),
            gzip: variant(Encoding::Gzip),
            br: variant(Encoding::Brotli),
        }
    }

    /// The body and ETag in `encoding`, if this response has that variant.
    pub fn variant(&self, encoding: Encoding) -> Option<&Variant> {
        match encoding {
            Encoding::Identity => Some(&self.identity),
            Encoding::Gzip => self.gzip.as_ref(),
            Encoding::Brotli => self.br.as_ref(),
        }
    }

    /// The best variant among the encodings `accepted` (indexed by [`Encoding`]):
    /// brotli, then gzip, then the identity body, which is always there.
    pub fn best(&self, accepted: [bool; 3]) -> (Encoding, &Variant) {
        [Encoding::Brotli, Encoding::Gzip]
            .into_iter()
            .filter(|encoding| accepted[*encoding as usize])
            .find_map(|encoding| Some((encoding, self.variant(encoding)?)))
            .unwrap_or((Encoding::Identity, &self.identity))
    }

    fn weight(&self) -> usize {
        [Some(&self.identity), self.gzip.as_ref(), self.br.as_ref()]
            .into_iter()
            .flatten()
            .map(|(body, etag)| body.len() + etag.len())
            .sum::<usize>()
            + self.content_type.len()
    }
}

/// Per-entry bookkeeping moka and the maps keep besides the bytes, for the weigher.
const ENTRY_OVERHEAD_BYTES: usize = 128;

pub struct NearCache {
    entries: Cache<Arc<str>, (u64, Arc<ReadyView>)>,
}

impl NearCache {
    /// A near-cache holding at most `max_bytes` of responses, each for at most `ttl`
    /// (the view TTL: a page nobody retires still gets rebuilt in time).
    pub fn new(max_bytes: u64, ttl: std::time::Duration) -> NearCache {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .weigher(|key: &Arc<str>, (_, view): &(u64, Arc<ReadyView>)| {
                u32::try_from(key.len() + view.weight() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .build();
        NearCache { entries }
    }

    /// The response kept for `key` if it was rendered under `generation`.
    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<ReadyView>> {
        self.entries
            .get(key)
            .filter(|(kept_under, _)| *kept_under == generation)
            .map(|(_, view)| view)
    }

    pub fn insert(&self, key: &str, generation: u64, view: Arc<ReadyView>) {
        self.entries.insert(Arc::from(key), (generation, view));
    }
}
