//! A page's count comes from the table of counts per location and price band that the
//! triggers keep (plus rows counted in the bands its bounds fall in): it must equal what
//! `count(*)` says, for bounds on and beside band edges, after writes by the
//! application and by other programs, and the table's bands must be the application's.

use std::str::FromStr as _;

use bigdecimal::BigDecimal;
use listings::domain::price_band::EDGES;
use listings::domain::{PropertyChanges, PropertyInput, PropertyQuery};
use listings::service::properties;
use rand::Rng as _;

use crate::both_modes;
use crate::support::{TestEnv, new_property, run_sql_elsewhere, sql_count};

both_modes!(counts_equal_the_rows_they_count);

/// Prices on both sides of band edges (1,200; 1,430; 21,300; 83,500,000), and far apart.
const PRICES: [&str; 10] = [
    "0.00",
    "1199.99",
    "1200.00",
    "1200.01",
    "1429.99",
    "1430.00",
    "21300.00",
    "500000.00",
    "83499999.99",
    "99999999.99",
];
const LOCATIONS: [&str; 3] = ["Lamu", "Thika", "Malindi"];

async fn counts_equal_the_rows_they_count(env: TestEnv) {
    // Migrates the database.
    let app = env.app().await;
    for (i, edge) in EDGES.iter().enumerate() {
        let below = sql_count(
            &env,
            &format!("SELECT count(*) FROM price_band_edges WHERE low <= {edge}"),
        )
        .await;
        assert_eq!(
            below,
            i as i64 + 1,
            "the database's band edge {edge} is the application's"
        );
    }
    assert_eq!(
        sql_count(&env, "SELECT count(*) FROM price_band_edges").await,
        EDGES.len() as i64
    );

    let mut ids = Vec::new();
    for i in 0..40 {
        let new = new_property(
            &format!("Row {i}"),
            PRICES[i % PRICES.len()],
            LOCATIONS[i % 3],
        );
        ids.push(
            properties::create_property(&app, &new)
                .await
                .expect("seed")
                .id,
        );
    }
    // Writes by the application and by another program, moving rows across bands and
    // locations.
    for step in 0..30 {
        let (id, other) = {
            let mut rng = rand::rng();
            (
                ids[rng.random_range(0..ids.len())],
                ids[rng.random_range(0..ids.len())],
            )
        };
        let price = PRICES[rand::rng().random_range(0..PRICES.len())];
        let location = LOCATIONS[rand::rng().random_range(0..3)];
        let statement = match step % 3 {
            0 => format!("UPDATE properties SET price = {price} WHERE id = {id}"),
            1 => format!(
                "UPDATE properties SET location = '{location}', location_key = '{}' WHERE id = {id}",
                location.to_lowercase()
            ),
            _ => format!("DELETE FROM properties WHERE id = {id}"),
        };
        run_sql_elsewhere(&env, &statement).await;
        let changes = PropertyChanges::parse(PropertyInput {
            price: Some(price),
            ..Default::default()
        })
        .expect("changes");
        // Not found when the other program deleted it.
        let _ = properties::update_property(&app, other, &changes).await;
    }

    let bounds: Vec<Option<&str>> = std::iter::once(None)
        .chain(PRICES.iter().copied().map(Some))
        .collect();
    let mut checked = 0;
    for location in std::iter::once(None).chain(LOCATIONS.iter().copied().map(Some)) {
        for min in &bounds {
            for max in &bounds {
                let query = PropertyQuery {
                    location: location.map(str::to_lowercase),
                    min_price: min.map(|p| BigDecimal::from_str(p).expect("price")),
                    max_price: max.map(|p| BigDecimal::from_str(p).expect("price")),
                    ..PropertyQuery::default()
                };
                let (page, _) = properties::list_properties(&app, &query)
                    .await
                    .expect("list");
                let mut filter = vec!["true".to_owned()];
                filter.extend(location.map(|l| format!("location_key = '{}'", l.to_lowercase())));
                filter.extend(min.map(|p| format!("price >= {p}")));
                filter.extend(max.map(|p| format!("price <= {p}")));
                let truth = sql_count(
                    &env,
                    &format!(
                        "SELECT count(*) FROM properties WHERE {}",
                        filter.join(" AND ")
                    ),
                )
                .await;
                assert_eq!(page.page.count, truth, "{query:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 11 * 11);
}
