//! Prices fall into log-spaced bands, each about 1.2 times the one below. Cache
//! invalidation groups listings by band (see `service::cache::tags`), and the database
//! keeps how many listings each location has in each band, so that a count is a sum of
//! a few rows (see the `row_changes` migration, whose `price_band_edges` table holds
//! these same edges).

use bigdecimal::{BigDecimal, ToPrimitive as _};

/// How many bands there are.
pub const BANDS: u32 = 64;

/// The lower bounds of bands 1 to 63, in whole currency units, from 1,200 to 83,500,000
/// (10^(5/64) apart, rounded to three digits); band 0 holds everything below. Integers,
/// so that every process on every machine, and the database, put a price in one band.
pub const EDGES: [i64; BANDS as usize - 1] = [
    1200, 1430, 1720, 2050, 2460, 2940, 3520, 4220, 5050, 6040, 7230, 8660, 10400, 12400, 14900,
    17800, 21300, 25500, 30500, 36500, 43700, 52300, 62600, 75000, 89800, 107000, 129000, 154000,
    184000, 221000, 264000, 316000, 379000, 453000, 542000, 649000, 777000, 931000, 1110000,
    1330000, 1600000, 1910000, 2290000, 2740000, 3280000, 3920000, 4700000, 5620000, 6730000,
    8060000, 9650000, 11500000, 13800000, 16500000, 19800000, 23700000, 28400000, 34000000,
    40700000, 48700000, 58300000, 69800000, 83500000,
];

/// The band of a price, or of a price bound: how many edges it reaches. Monotone, so
/// every price within a query's bounds falls in a band between theirs.
pub fn band(price: &BigDecimal) -> u32 {
    // The edges are whole units: dropping the fraction (prices are never negative)
    // never moves a price across one.
    let whole = price.with_scale(0).to_i64().unwrap_or(i64::MAX);
    EDGES.partition_point(|edge| *edge <= whole) as u32
}

/// The lowest price of band `band` (`None` for band 0, which has no lower bound, and
/// for bands past the last).
pub fn lowest_of(band: u32) -> Option<BigDecimal> {
    let edge = EDGES.get(usize::try_from(band).ok()?.checked_sub(1)?)?;
    Some(BigDecimal::from(*edge))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[test]
    fn a_band_starts_at_its_edge() {
        let price = |p: &str| BigDecimal::from_str(p).unwrap();
        assert_eq!(band(&price("0")), 0);
        assert_eq!(band(&price("1199.99")), 0);
        assert_eq!(band(&price("1200.00")), 1);
        assert_eq!(band(&price("99999999.99")), BANDS - 1);
        assert_eq!(lowest_of(0), None);
        assert_eq!(lowest_of(1), Some(price("1200")));
        assert_eq!(lowest_of(BANDS - 1), Some(price("83500000")));
        assert_eq!(lowest_of(BANDS), None);
        for b in 1..BANDS {
            assert_eq!(band(&lowest_of(b).unwrap()), b);
        }
        assert!(EDGES.windows(2).all(|w| w[0] < w[1]));
    }
}
