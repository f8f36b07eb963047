//! What the operator's tools read about the cache: its backend's state, and in Redis mode
//! the counters every server process adds to, read from another process.

use std::sync::Arc;

use crate::config::{KeyPrefix, RedisUrl};

pub use super::cache::CacheBackendStatus;
pub use super::cache::RedisStats;
use super::cache::keys::KeySpace;
use super::cache::{Cache, Sizes};

/// Redis mode, for `cache-metrics`: the server-wide keyspace numbers and the counters
/// every server process adds to, read from another process.
pub struct SharedCacheStats {
    cache: Cache,
}

impl SharedCacheStats {
    pub fn new(url: &RedisUrl, prefix: &KeyPrefix) -> anyhow::Result<SharedCacheStats> {
        let keys = KeySpace::new(prefix.as_str());
        // A reader keeps nothing in process.
        let sizes = Sizes {
            cache: 0,
            near: 0,
            near_ttl: std::time::Duration::ZERO,
        };
        Ok(SharedCacheStats {
            cache: Cache::redis(url, keys, sizes, Arc::default())?,
        })
    }

    pub async fn read(&self) -> anyhow::Result<RedisStats> {
        self.cache
            .shared_stats()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the cache is not shared: no Redis to read from"))
    }
}
