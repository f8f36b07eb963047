//! How cached values are stored. A view entry is a compact binary envelope so that a hit
//! sends the stored body bytes as they are, without JSON work.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

use crate::db::models::{Property, PropertyPage};

pub trait CacheValue: Sized + Send {
    fn encode(&self) -> Bytes;
    /// `None` for bytes that are not a value of this type (a format change, corruption):
    /// the caller treats that as a miss.
    fn decode(bytes: Bytes) -> Option<Self>;
}

/// Query results are stored as JSON.
macro_rules! json_value {
    ($($value:ty),+) => {$(
        impl CacheValue for $value {
            fn encode(&self) -> Bytes {
                serde_json::to_vec(self).map(Bytes::from).unwrap_or_default()
            }

            fn decode(bytes: Bytes) -> Option<Self> {
                serde_json::from_slice(&bytes).ok()
            }
        }
    )+};
}

json_value!(PropertyPage, Property);

/// What a response needs to be sent again, with its strong ETag computed once, when
/// it was rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    pub etag: String,
    pub body: Bytes,
}

impl CachedResponse {
    pub fn new(status: u16, content_type: String, body: Bytes) -> CachedResponse {
        let etag = strong_etag(&body);
        CachedResponse {
            status,
            content_type,
            etag,
            body,
        }
    }
}

/// `"<length>-<FNV-1a 64>"`: stable across processes and versions, so servers sharing
/// Redis, or rendering the same bytes separately, agree on it.
fn strong_etag(body: &[u8]) -> String {
    format!("\"{:x}-{:016x}\"", body.len(), crate::cache::fnv1a64(body))
}

/// Bumped whenever the envelope layout changes, so old entries read as misses.
const ENVELOPE_VERSION: u8 = 2;

impl CacheValue for CachedResponse {
    /// `[version][status: u16][content-type length: u8][content type][etag length: u8][etag][body]`
    fn encode(&self) -> Bytes {
        let content_type = short(&self.content_type);
        let etag = short(&self.etag);
        let mut out =
            BytesMut::with_capacity(5 + content_type.len() + etag.len() + self.body.len());
        out.put_u8(ENVELOPE_VERSION);
        out.put_u16(self.status);
        out.put_u8(content_type.len() as u8);
        out.put_slice(content_type);
        out.put_u8(etag.len() as u8);
        out.put_slice(etag);
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.len() < 5 || bytes.get_u8() != ENVELOPE_VERSION {
            return None;
        }
        let status = bytes.get_u16();
        let content_type = take_short(&mut bytes)?;
        let etag = take_short(&mut bytes)?;
        Some(CachedResponse {
            status,
            content_type,
            etag,
            body: bytes,
        })
    }
}

/// Header values here are ASCII and short; anything longer than a length byte allows is
/// cut rather than corrupting the envelope.
fn short(text: &str) -> &[u8] {
    &text.as_bytes()[..text.len().min(255)]
}

fn take_short(bytes: &mut Bytes) -> Option<String> {
    let len = usize::from(*bytes.first()?);
    bytes.advance(1);
    if bytes.len() < len {
        return None;
    }
    String::from_utf8(bytes.split_to(len).to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let response = CachedResponse::new(
            200,
            "application/json".into(),
            Bytes::from_static(br#"{"data":[]}"#),
        );
        assert!(
            response.etag.starts_with("\"b-") && response.etag.len() == 20,
            "{}",
            response.etag
        );
        let other = CachedResponse::new(
            200,
            "application/json".into(),
            Bytes::from_static(br#"{"data":[1]}"#),
        );
        assert_ne!(other.etag, response.etag);
        assert_eq!(CachedResponse::decode(response.encode()), Some(response));
        assert_eq!(
            CachedResponse::decode(Bytes::from_static(b"{\"x\":1}")),
            None
        );
        assert_eq!(
            CachedResponse::decode(Bytes::from_static(&[2, 0, 200, 9, b'a'])),
            None
        );
    }
}
