//! Every cache key format, in one place. Each key type is bound to one value type, so a
//! read can never decode into the wrong struct.
//!
//! Layout (prefix `listings:` by default):
//! - `{prefix}{resource}:generation`: the generation counter; never expires.
//! - `{prefix}{resource}:g{generation}:{kind}:{name}`: an entry, valid while the
//!   counter still holds that generation. A bump retires every entry of the resource at
//!   once; retired entries expire by TTL.
//! - `{prefix}stats:{kind}:hits` / `:misses`: counters shared by every process.

use crate::cache::values::{CacheValue, CachedResponse};
use crate::db::models::{Property, PropertyPage};
use crate::domain::PropertyQuery;
use crate::metrics::CacheKind;

/// A set of entries retired together by one generation bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Properties,
}

impl Resource {
    pub const ALL: [Resource; 1] = [Resource::Properties];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Properties => "properties",
        }
    }
}

pub trait CacheKey {
    type Value: CacheValue;
    const KIND: CacheKind;
    fn resource(&self) -> Resource;
    /// Unique within the kind.
    fn name(&self) -> String;
}

/// The first page of the default listing: the logical key `all_properties`.
pub struct AllPropertiesKey;

impl CacheKey for AllPropertiesKey {
    type Value = PropertyPage;
    const KIND: CacheKind = CacheKind::AllProperties;

    fn resource(&self) -> Resource {
        Resource::Properties
    }

    fn name(&self) -> String {
        "all_properties".to_owned()
    }
}

/// Any other search, by its canonical query (see `PropertyQuery::canonical`).
pub struct PropertyQueryKey(String);

impl PropertyQueryKey {
    pub fn new(query: &PropertyQuery) -> PropertyQueryKey {
        PropertyQueryKey(query.canonical())
    }
}

impl CacheKey for PropertyQueryKey {
    type Value = PropertyPage;
    const KIND: CacheKind = CacheKind::Queries;

    fn resource(&self) -> Resource {
        Resource::Properties
    }

    fn name(&self) -> String {
        self.0.clone()
    }
}

/// One property by id. Misses for ids that do not exist are not stored, so random
/// ids cannot fill the cache. Items share the resource generation: every write retires
/// them all, since a point read is cheap to redo and one counter keeps the stale-set
/// guarantee simple.
pub struct PropertyKey(pub i64);

impl CacheKey for PropertyKey {
    type Value = Property;
    const KIND: CacheKind = CacheKind::Items;

    fn resource(&self) -> Resource {
        Resource::Properties
    }

    fn name(&self) -> String {
        self.0.to_string()
    }
}

/// A whole HTTP response to a GET (HEAD is answered from it), by its normalized URL.
pub struct ViewKey {
    request: String,
    resource: Resource,
}

impl ViewKey {
    pub fn new(path_and_query: &str, resource: Resource) -> ViewKey {
        ViewKey {
            request: format!("GET {path_and_query}"),
            resource,
        }
    }
}

impl CacheKey for ViewKey {
    type Value = CachedResponse;
    const KIND: CacheKind = CacheKind::View;

    fn resource(&self) -> Resource {
        self.resource
    }

    fn name(&self) -> String {
        self.request.clone()
    }
}

/// Builds key strings under one prefix.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
}

/// An entry's key with the generation left open: `head + generation + tail`.
#[derive(Clone, Debug)]
pub struct EntryKey {
    pub resource: Resource,
    pub head: String,
    pub tail: String,
}

impl EntryKey {
    pub fn at(&self, generation: u64) -> String {
        format!("{}{generation}{}", self.head, self.tail)
    }
}

impl KeySpace {
    pub fn new(prefix: &str) -> KeySpace {
        KeySpace {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn generation(&self, resource: Resource) -> String {
        format!("{}{}:generation", self.prefix, resource.name())
    }

    /// Every entry of `resource`, whatever its generation, starts with this.
    pub fn entries_of(&self, resource: Resource) -> String {
        format!("{}{}:g", self.prefix, resource.name())
    }

    pub fn entry<K: CacheKey>(&self, key: &K) -> EntryKey {
        EntryKey {
            resource: key.resource(),
            head: self.entries_of(key.resource()),
            tail: format!(":{}:{}", K::KIND.name(), key.name()),
        }
    }

    /// The hash of near-cache leases and the generations servers confirmed.
    pub fn near_registry(&self) -> String {
        format!("{}near", self.prefix)
    }

    /// The channel new generations are published on (a channel, not a key).
    pub fn generations_channel(&self) -> String {
        format!("{}generations", self.prefix)
    }

    pub fn hits(&self, kind: CacheKind) -> String {
        format!("{}stats:{}:hits", self.prefix, kind.name())
    }

    pub fn misses(&self, kind: CacheKind) -> String {
        format!("{}stats:{}:misses", self.prefix, kind.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_are_stable() {
        let keys = KeySpace::new("listings:");
        assert_eq!(
            keys.generation(Resource::Properties),
            "listings:properties:generation"
        );
        assert_eq!(
            keys.entry(&AllPropertiesKey).at(7),
            "listings:properties:g7:all_properties:all_properties"
        );
        let view = ViewKey::new("/properties/?a=1", Resource::Properties);
        assert_eq!(
            keys.entry(&view).at(7),
            "listings:properties:g7:view:GET /properties/?a=1"
        );
        assert_eq!(keys.hits(CacheKind::View), "listings:stats:view:hits");
    }
}
