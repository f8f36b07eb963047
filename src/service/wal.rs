//! Positions in PostgreSQL's write-ahead log: what a replica has replayed is compared
//! with the watermark every acknowledged write raised (see `db::replicas`).

use std::fmt;

/// A WAL position (PostgreSQL's `pg_lsn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalPosition(u64);

impl WalPosition {
    /// PostgreSQL's text form, `16/B374D848`.
    pub fn parse_pg(text: &str) -> Option<WalPosition> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(WalPosition((u64::from(high) << 32) | u64::from(low)))
    }

    /// Sixteen hex digits: the watermark's form in Redis, where scripts compare
    /// positions as strings.
    pub fn sortable(self) -> String {
        format!("{:016X}", self.0)
    }

    pub fn from_sortable(text: &str) -> Option<WalPosition> {
        (text.len() == 16)
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
            .map(WalPosition)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> WalPosition {
        WalPosition(raw)
    }

    /// Bytes of WAL from `earlier` to this position (0 if it is not later).
    pub fn bytes_after(self, earlier: WalPosition) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// As PostgreSQL writes it.
impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Where a cache fill may read: only the primary, or any replica that has replayed the
/// primary's WAL up to the watermark (every acknowledged write's commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFloor {
    PrimaryOnly,
    Replayed(WalPosition),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_as_postgresql_writes_them_and_sort_as_text() {
        let low = WalPosition::parse_pg("0/16B3748").unwrap();
        let high = WalPosition::parse_pg("1A/0").unwrap();
        assert!(low < high);
        assert_eq!(low.to_string(), "0/16B3748");
        assert_eq!(high.to_string(), "1A/0");
        assert!(
            low.sortable() < high.sortable(),
            "Redis compares them as strings"
        );
        assert_eq!(WalPosition::from_sortable(&high.sortable()), Some(high));
        assert_eq!(high.bytes_after(low), (0x1A << 32) - 0x16B3748);
        assert_eq!(low.bytes_after(high), 0);
        for bad in ["", "16B3748", "x/1", "1/", "100000000/0"] {
            assert_eq!(WalPosition::parse_pg(bad), None, "{bad:?}");
        }
    }
}
