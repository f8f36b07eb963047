//! A rendered response as the view level caches it: status, content type, a strong ETag
//! and the body, with its gzip and brotli variants made once each, when a client first
//! takes them (see `service::views`), and the compact binary envelope it is stored in, so
//! that a hit sends the stored body bytes as they are, without JSON work.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// What a response needs to be sent again: its status, content type, strong ETag and
/// body, with gzip and brotli variants made once each, if a client took them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    /// The identity body's ETag; each variant's is derived from it (see [`Encoding`]).
    pub etag: String,
    pub body: Bytes,
    /// Empty for a small body, and until [`CachedResponse::with_encodings`] made it.
    pub gzip: Bytes,
    /// As `gzip`.
    pub br: Bytes,
}

/// Bodies smaller than this are sent as they are: compressing them saves little.
const COMPRESS_FROM_BYTES: usize = 1024;
/// gzip level and brotli quality: good ratios at a fraction of a millisecond for a page
/// of listings; the cost is paid once per rendering and server whose clients take them,
/// not per request.
const GZIP_LEVEL: u32 = 6;
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW_BITS: u32 = 22;

/// The encodings a cached response is kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` token, and the ETag suffix that keeps each variant's
    /// validator distinct.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
        }
    }
}

impl CachedResponse {
    /// Renders a response for the cache: its ETag, and no compressed variant yet.
    pub fn new(status: u16, content_type: String, body: Bytes) -> CachedResponse {
        let etag = strong_etag(&body);
        CachedResponse {
            status,
            content_type,
            etag,
            body,
            gzip: Bytes::new(),
            br: Bytes::new(),
        }
    }

    /// This response with the variants among `wanted` that it lacks and is worth;
    /// `None` when it lacks none of them.
    pub fn with_encodings(&self, wanted: &[Encoding]) -> Option<CachedResponse> {
        if !worth_compressing(&self.body) {
            return None;
        }
        let mut complete: Option<CachedResponse> = None;
        for &encoding in wanted {
            if self.variant(encoding).is_some() {
                continue;
            }
            let made = match encoding {
                Encoding::Identity => continue,
                Encoding::Gzip => gzip(&self.body),
                Encoding::Brotli => brotli(&self.body),
            };
            if made.is_empty() {
                // Compression failed: no variant.
                continue;
            }
            let complete = complete.get_or_insert_with(|| self.clone());
            match encoding {
                Encoding::Gzip => complete.gzip = made,
                _ => complete.br = made,
            }
        }
        complete
    }

    /// A rendering for the cache, with the variants among `wanted`.
    pub fn rendered(
        status: u16,
        content_type: String,
        body: Bytes,
        wanted: &[Encoding],
    ) -> CachedResponse {
        let rendered = CachedResponse::new(status, content_type, body);
        rendered.with_encodings(wanted).unwrap_or(rendered)
    }

    /// Whether a variant in `encoding` would be worth making: the body is long enough,
    /// and it has none yet.
    pub fn lacks(&self, encoding: Encoding) -> bool {
        worth_compressing(&self.body) && self.variant(encoding).is_none()
    }

    /// The body in `encoding`, if this response has that variant.
    pub fn variant(&self, encoding: Encoding) -> Option<&Bytes> {
        let body = match encoding {
            Encoding::Identity => return Some(&self.body),
            Encoding::Gzip => &self.gzip,
            Encoding::Brotli => &self.br,
        };
        (!body.is_empty()).then_some(body)
    }

    /// The ETag of the variant in `encoding`: `"…"` for identity, `"…-gzip"`, `"…-br"`.
    pub fn etag_of(&self, encoding: Encoding) -> String {
        match encoding {
            Encoding::Identity => self.etag.clone(),
            other => format!("{}-{}\"", self.etag.trim_end_matches('"'), other.token()),
        }
    }
}

/// Whether a body is long enough for compressed variants to pay.
pub fn worth_compressing(body: &[u8]) -> bool {
    body.len() >= COMPRESS_FROM_BYTES
}

/// Deflate states kept for reuse. A new one allocates and zeroes about 300 KB, which
/// cost a miss more than compressing its page (a profile of bench/mix's misses: page
/// faults, memset and malloc beside the compression itself); one reset is a fraction.
static DEFLATERS: std::sync::Mutex<Vec<flate2::Compress>> = std::sync::Mutex::new(Vec::new());
/// Enough for every thread that compresses at once on a small machine; more are made
/// and dropped when needed.
const KEPT_DEFLATERS: usize = 8;

/// The header flate2's `GzEncoder` writes at this level: no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// `body` as a gzip member (RFC 1952), byte for byte what `GzEncoder` makes; empty if
/// compression failed (then there is no gzip variant).
fn gzip(body: &[u8]) -> Bytes {
    let kept = DEFLATERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop();
    let mut deflate =
        kept.unwrap_or_else(|| flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false));
    deflate.reset();
    let compressed = deflate_into(&mut deflate, body);
    let mut kept = DEFLATERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kept.len() < KEPT_DEFLATERS {
        kept.push(deflate);
    }
    compressed.map_or_else(Bytes::new, Bytes::from)
}

fn deflate_into(deflate: &mut flate2::Compress, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + body.len() / 3 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    loop {
        let read = usize::try_from(deflate.total_in()).ok()?;
        let rest = body.get(read..)?;
        // Writes only into the spare capacity: more is reserved until the stream ends.
        match deflate
            .compress_vec(rest, &mut out, flate2::FlushCompress::Finish)
            .ok()?
        {
            flate2::Status::StreamEnd => break,
            flate2::Status::Ok | flate2::Status::BufError => out.reserve(out.len().max(256)),
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Some(out)
}

fn brotli(body: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut compressed = Vec::with_capacity(body.len() / 4);
    {
        let mut encoder = brotli::CompressorWriter::new(
            &mut compressed,
            4096,
            BROTLI_QUALITY,
            BROTLI_WINDOW_BITS,
        );
        if encoder.write_all(body).is_err() {
            return Bytes::new();
        }
    }
    Bytes::from(compressed)
}

/// `"<length>-<FNV-1a 64>"`: stable across processes and versions, so servers sharing
/// Redis, or rendering the same bytes separately, agree on it.
pub(super) fn strong_etag(body: &[u8]) -> String {
    format!(
        "\"{:x}-{:016x}\"",
        body.len(),
        crate::stable_hash::fnv1a64(body)
    )
}

/// Bumped whenever the envelope layout changes, so old entries read as misses.
const ENVELOPE_VERSION: u8 = 3;

impl CachedResponse {
    /// `[version][status: u16][content-type length: u8][content type][etag length: u8]
    /// [etag][body length: u32][body][gzip length: u32][gzip][brotli]`
    pub fn to_bytes(&self) -> Bytes {
        let content_type = short(&self.content_type);
        let etag = short(&self.etag);
        let mut out = BytesMut::with_capacity(
            13 + content_type.len()
                + etag.len()
                + self.body.len()
                + self.gzip.len()
                + self.br.len(),
        );
        out.put_u8(ENVELOPE_VERSION);
        out.put_u16(self.status);
        out.put_u8(content_type.len() as u8);
        out.put_slice(content_type);
        out.put_u8(etag.len() as u8);
        out.put_slice(etag);
        for part in [&self.body, &self.gzip] {
            out.put_u32(u32::try_from(part.len()).unwrap_or(u32::MAX));
            out.put_slice(part);
        }
        out.put_slice(&self.br);
        out.freeze()
    }

    /// `None` for bytes that are no envelope of this version. The bodies are slices of
    /// `bytes`: decoding copies none of them.
    pub fn from_bytes(mut bytes: Bytes) -> Option<Self> {
        if bytes.len() < 5 || bytes.get_u8() != ENVELOPE_VERSION {
            return None;
        }
        let status = bytes.get_u16();
        let content_type = take_short(&mut bytes)?;
        let etag = take_short(&mut bytes)?;
        let body = take_sized(&mut bytes)?;
        let gzip = take_sized(&mut bytes)?;
        Some(CachedResponse {
            status,
            content_type,
            etag,
            body,
            gzip,
            br: bytes,
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

fn take_sized(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.len() < 4 {
        return None;
    }
    let len = usize::try_from(bytes.get_u32()).ok()?;
    (bytes.len() >= len).then(|| bytes.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_get_compressed_variants_with_their_own_etags() {
        use std::io::Read as _;

        let body = Bytes::from(r#"{"title":"Beach villa"}"#.repeat(100));
        let rendered = CachedResponse::new(200, "application/json".into(), body.clone());
        assert_eq!(
            rendered.variant(Encoding::Gzip),
            None,
            "made when asked for"
        );
        assert_eq!(
            rendered.variant(Encoding::Brotli),
            None,
            "made when asked for"
        );
        let gzipped = rendered.with_encodings(&[Encoding::Gzip]).expect("gzip");
        assert_eq!(gzipped.variant(Encoding::Brotli), None, "not asked for");
        let response = gzipped
            .with_encodings(&[Encoding::Gzip, Encoding::Brotli])
            .expect("a brotli variant");
        assert_eq!(response.gzip, gzipped.gzip, "kept, not made again");
        let both = [Encoding::Gzip, Encoding::Brotli];
        assert_eq!(response.with_encodings(&both), None, "made once");
        let gzipped = response.variant(Encoding::Gzip).expect("gzip");
        assert!(gzipped.len() < body.len() / 4);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, body);
        let mut unbrotlied = Vec::new();
        brotli::Decompressor::new(&response.variant(Encoding::Brotli).unwrap()[..], 4096)
            .read_to_end(&mut unbrotlied)
            .unwrap();
        assert_eq!(unbrotlied, body);
        let etags = [Encoding::Identity, Encoding::Gzip, Encoding::Brotli]
            .map(|encoding| response.etag_of(encoding));
        assert!(
            etags[1].ends_with("-gzip\"") && etags[2].ends_with("-br\""),
            "{etags:?}"
        );
        assert_ne!(etags[0], etags[1]);
        assert_eq!(
            CachedResponse::from_bytes(response.to_bytes()),
            Some(response)
        );
        let small = CachedResponse::new(200, "application/json".into(), Bytes::from_static(b"{}"));
        assert_eq!(small.with_encodings(&both), None, "too small to pay");
    }

    #[test]
    fn reused_deflaters_make_what_a_new_gzip_encoder_makes() {
        use std::io::Write as _;
        // Bodies of several sizes, one after another on the same kept states: a
        // state left over from a larger body must not leak into the next.
        for size in [5_000, 200_000, 1_024, 70_000, 3] {
            let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8 ^ b'a').collect();
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(&body).unwrap();
            let expected = encoder.finish().unwrap();
            assert_eq!(gzip(&body), Bytes::from(expected), "{size} bytes");
        }
    }

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
        assert_eq!(
            CachedResponse::from_bytes(response.to_bytes()),
            Some(response)
        );
        assert_eq!(
            CachedResponse::from_bytes(Bytes::from_static(b"{\"x\":1}")),
            None
        );
        assert_eq!(
            CachedResponse::from_bytes(Bytes::from_static(&[3, 0, 200, 9, b'a'])),
            None
        );
    }
}
