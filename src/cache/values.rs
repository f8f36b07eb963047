//! How cached values are stored. A view entry is a compact binary envelope so that a hit
//! sends the stored body bytes as they are, without JSON work.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

use crate::db::models::Property;

pub trait CacheValue: Sized + Send {
    fn encode(&self) -> Bytes;
    /// `None` for bytes that are not a value of this type (a format change, corruption):
    /// the caller treats that as a miss.
    fn decode(bytes: Bytes) -> Option<Self>;
}

impl CacheValue for Vec<Property> {
    fn encode(&self) -> Bytes {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    fn decode(bytes: Bytes) -> Option<Self> {
        serde_json::from_slice(&bytes).ok()
    }
}

/// What a response needs to be sent again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// Bumped whenever the envelope layout changes, so old entries read as misses.
const ENVELOPE_VERSION: u8 = 1;

impl CacheValue for CachedResponse {
    /// `[version][status: u16][content-type length: u8][content type][body]`
    fn encode(&self) -> Bytes {
        let content_type = &self.content_type.as_bytes()[..self.content_type.len().min(255)];
        let mut out = BytesMut::with_capacity(4 + content_type.len() + self.body.len());
        out.put_u8(ENVELOPE_VERSION);
        out.put_u16(self.status);
        out.put_u8(content_type.len() as u8);
        out.put_slice(content_type);
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.len() < 4 || bytes.get_u8() != ENVELOPE_VERSION {
            return None;
        }
        let status = bytes.get_u16();
        let content_type_len = usize::from(bytes.get_u8());
        if bytes.len() < content_type_len {
            return None;
        }
        let content_type = String::from_utf8(bytes.split_to(content_type_len).to_vec()).ok()?;
        Some(CachedResponse {
            status,
            content_type,
            body: bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let response = CachedResponse {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from_static(br#"{"data":[]}"#),
        };
        assert_eq!(CachedResponse::decode(response.encode()), Some(response));
        assert_eq!(
            CachedResponse::decode(Bytes::from_static(b"{\"x\":1}")),
            None
        );
        assert_eq!(
            CachedResponse::decode(Bytes::from_static(&[1, 0, 200, 9, b'a'])),
            None
        );
    }
}
