//! A cached response ready to send (header values built, each encoding it has at
//! hand), as each server keeps it in its near-cache: a hit costs no decoding and no
//! allocation.

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;

use super::envelope::{CachedResponse, Encoding};
use super::file_copy::FileCopy;

/// A body and its ETag.
pub type Variant = (Bytes, HeaderValue);

/// A response as the near-cache keeps it.
pub struct ReadyView {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    identity: Variant,
    gzip: Option<Variant>,
    br: Option<Variant>,
    /// The identity body in a memory file too, when it is long (see `file_copy`).
    identity_file: Option<FileCopy>,
}

impl ReadyView {
    pub fn from_cached(cached: &CachedResponse) -> ReadyView {
        // ETags are ASCII made here; an invalid one is not served rather than wrong.
        let etag = |encoding: Encoding| HeaderValue::from_str(&cached.etag_of(encoding)).ok();
        let variant =
            |encoding: Encoding| Some((cached.variant(encoding)?.clone(), etag(encoding)?));
        ReadyView {
            identity_file: None,
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

    /// As [`Self::from_cached`], for a response kept to serve many times: a long
    /// identity body is also put in a memory file, which the server sends from.
    pub fn to_keep(cached: &CachedResponse) -> ReadyView {
        ReadyView {
            identity_file: FileCopy::of(&cached.body),
            ..ReadyView::from_cached(cached)
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

    /// Whether a variant in `encoding` would be worth making: the body is long enough,
    /// and it has none yet.
    pub fn lacks(&self, encoding: Encoding) -> bool {
        super::envelope::worth_compressing(&self.identity.0) && self.variant(encoding).is_none()
    }

    /// The response as the cache stores it.
    pub fn to_cached(&self) -> CachedResponse {
        let text = |value: &HeaderValue| value.to_str().unwrap_or_default().to_owned();
        let body = |variant: &Option<Variant>| {
            variant
                .as_ref()
                .map(|(body, _)| body.clone())
                .unwrap_or_default()
        };
        CachedResponse {
            status: self.status.as_u16(),
            content_type: text(&self.content_type),
            etag: text(&self.identity.1),
            body: self.identity.0.clone(),
            gzip: body(&self.gzip),
            br: body(&self.br),
        }
    }

    /// Bytes it holds, for the near-cache's bound.
    pub fn weight(&self) -> usize {
        [Some(&self.identity), self.gzip.as_ref(), self.br.as_ref()]
            .into_iter()
            .flatten()
            .map(|(body, etag)| body.len() + etag.len())
            .sum::<usize>()
            + self.content_type.len()
            + self
                .identity_file
                .as_ref()
                .map_or(0, |_| self.identity.0.len())
    }
}
