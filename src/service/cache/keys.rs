//! Every cache key format, in one place. Each key type is bound to one value type, so a
//! read can never decode into the wrong struct.
//!
//! Layout (prefix `listings:` by default), made for Redis Cluster as much as for one
//! server:
//! - control keys, all in one hash slot (the hash tag `{prefix}`), because the scripts
//!   that keep the promise touch several of them at once:
//!   - `{prefix}{resource}:clock`: a hash of the bump sequence (`seq`) and, by tag, the
//!     number of its latest bump (see `clock`); never expires;
//!   - `{prefix}{resource}:master`: the run id of the master that wrote the clock: any
//!     other master inherited it and retires everything first;
//!   - `{prefix}near`: near-cache leases and the bumps servers confirmed;
//!   - `{prefix}stats:{kind}:hits` / `:misses`, `{prefix}stats:requests`,
//!     `{prefix}stats:db_queries`: counters shared by every process;
//! - entries, spread over every master by a hash tag of their own:
//!   `{prefix}{resource}:{{kind}:{name}}`, and their fill lock `…}:fill` in the same
//!   slot. An entry's value opens with its stamp, which says whether it is still
//!   current, so no script needs the clock and an entry together; an entry a write
//!   retired is replaced by the next load, or expires by TTL.

use crate::domain::Property;
use crate::domain::PropertyQuery;
use crate::metrics::{CacheKind, Counts};
use crate::service::cache::values::CacheValue;
use crate::service::cache::values::StoredPage;
use crate::view::CachedResponse;

/// The entries of one table (the clock's tags name its rows and their filters).
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

    /// The resource of a name [`Resource::name`] gave (its table's name, too).
    pub fn named(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

pub trait CacheKey {
    type Value: CacheValue;
    const KIND: CacheKind;
    fn resource(&self) -> Resource;
    /// Unique within the kind.
    fn name(&self) -> String;
    /// The entry's key in the near-cache, which keeps ready responses only.
    fn near_key(&self) -> Option<&str> {
        None
    }
}

/// The first page of the default listing: the logical key `all_properties`.
pub struct AllPropertiesKey;

impl CacheKey for AllPropertiesKey {
    type Value = StoredPage;
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
    type Value = StoredPage;
    const KIND: CacheKind = CacheKind::Queries;

    fn resource(&self) -> Resource {
        Resource::Properties
    }

    fn name(&self) -> String {
        self.0.clone()
    }
}

/// One property by id. Misses for ids that do not exist are not stored, so random
/// ids cannot fill the cache.
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

/// Views are of `GET` requests (a `HEAD` is answered from its `GET`).
const REQUEST_METHOD: &str = "GET ";

/// A whole HTTP response to a GET (HEAD is answered from it), by its normalized URL.
pub struct ViewKey {
    request: String,
    resource: Resource,
}

impl ViewKey {
    pub fn new(path_and_query: &str, resource: Resource) -> ViewKey {
        ViewKey {
            request: format!("{REQUEST_METHOD}{path_and_query}"),
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

    fn near_key(&self) -> Option<&str> {
        self.request.strip_prefix(REQUEST_METHOD)
    }
}

/// Builds key strings under one prefix.
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
}

/// An entry's key; its hash tag holds the kind and the name.
#[derive(Clone, Debug)]
pub struct EntryKey(String);

impl EntryKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of the lock one process holds while it loads the entry, so that the
    /// others wait for its value instead of loading too; in the entry's slot.
    pub fn fill_lock(&self) -> String {
        format!("{}:fill", self.0)
    }
}

impl std::fmt::Display for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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

    fn control(&self, name: &str) -> String {
        format!("{{{}}}{name}", self.prefix)
    }

    /// The bump sequence and each tag's latest bump.
    pub fn clock(&self, resource: Resource) -> String {
        self.control(&format!("{}:clock", resource.name()))
    }

    /// The run id of the Redis master that last vouched for the clock.
    pub fn master(&self, resource: Resource) -> String {
        self.control(&format!("{}:master", resource.name()))
    }

    pub fn entry<K: CacheKey>(&self, key: &K) -> EntryKey {
        EntryKey(format!(
            "{}{}:{{{}:{}}}",
            self.prefix,
            key.resource().name(),
            K::KIND.name(),
            key.name()
        ))
    }

    /// The hash of near-cache leases and the bumps servers confirmed.
    pub fn near_registry(&self) -> String {
        self.control("near")
    }

    /// The channel bumps are published on (a channel, not a key).
    pub fn bumps_channel(&self) -> String {
        format!("{}bumps", self.prefix)
    }

    /// Every process's reads per replica: a hash of `host:port` to a count.
    pub fn replica_reads(&self) -> String {
        self.control("stats:replica_reads")
    }

    /// The shared counters' keys, in the order of [`Counts::names`].
    pub fn shared_counters(&self) -> Vec<String> {
        Counts::names()
            .iter()
            .map(|name| self.control(&format!("stats:{name}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_are_stable() {
        let keys = KeySpace::new("listings:");
        assert_eq!(
            keys.clock(Resource::Properties),
            "{listings:}properties:clock"
        );
        assert_eq!(
            keys.entry(&AllPropertiesKey).as_str(),
            "listings:properties:{all_properties:all_properties}"
        );
        let view = ViewKey::new("/properties/?a=1", Resource::Properties);
        assert_eq!(
            keys.entry(&view).as_str(),
            "listings:properties:{view:GET /properties/?a=1}"
        );
        let shared = keys.shared_counters();
        assert_eq!(shared[0], "{listings:}stats:view:hits");
        assert_eq!(shared[1], "{listings:}stats:view:misses");
        assert!(shared.contains(&"{listings:}stats:db_queries".to_owned()));
        assert_eq!(
            shared.last().map(String::as_str),
            Some("{listings:}stats:fallbacks:failed")
        );
        assert_eq!(keys.replica_reads(), "{listings:}stats:replica_reads");
        assert_eq!(keys.near_registry(), "{listings:}near");
    }

    #[test]
    fn control_keys_share_a_slot_and_entries_spread() {
        use crate::redis_link::key_slot;
        let keys = KeySpace::new("listings:");
        let control = key_slot(keys.clock(Resource::Properties).as_bytes());
        assert_eq!(key_slot(keys.near_registry().as_bytes()), control);
        assert_eq!(
            key_slot(keys.master(Resource::Properties).as_bytes()),
            control
        );
        for counter in keys.shared_counters() {
            assert_eq!(key_slot(counter.as_bytes()), control, "{counter}");
        }
        let slots: std::collections::HashSet<u16> = (0..64)
            .map(|id| key_slot(keys.entry(&PropertyKey(id)).as_str().as_bytes()))
            .collect();
        assert!(
            slots.len() > 32,
            "entries spread over slots: {}",
            slots.len()
        );
        let entry = keys.entry(&ViewKey::new("/properties/?q=}{x", Resource::Properties));
        assert_eq!(
            key_slot(entry.as_str().as_bytes()),
            key_slot(entry.fill_lock().as_bytes()),
            "an entry and its fill lock share a slot, whatever the name holds"
        );
    }
}
