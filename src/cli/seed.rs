//! `listings seed --count N`: realistic generated listings for demos and benchmarks,
//! inserted like an import (batches, one transaction, one invalidation).

use anyhow::Context as _;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::cli::progress::Progress;
use crate::cli::{GlobalOpts, settle_unconfirmed_writes};
use crate::domain::{NewProperty, PropertyInput};
use crate::service;
use crate::service::App;

#[derive(Debug, Args)]
pub struct Opts {
    /// How many listings to add
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Random seed, for the same listings on every run
    #[arg(long)]
    pub seed: Option<u64>,
}

const LOCATIONS: [&str; 20] = [
    "Malindi",
    "Nairobi",
    "Mombasa",
    "Kilifi",
    "Watamu",
    "Lamu",
    "Diani",
    "Nakuru",
    "Kisumu",
    "Eldoret",
    "Naivasha",
    "Nanyuki",
    "Thika",
    "Karen",
    "Westlands",
    "Kileleshwa",
    "Lavington",
    "Runda",
    "Nyali",
    "Kitengela",
];
const ADJECTIVES: [&str; 10] = [
    "Spacious",
    "Charming",
    "Modern",
    "Sunny",
    "Quiet",
    "Renovated",
    "Elegant",
    "Cosy",
    "Bright",
    "Secluded",
];
/// Kind, and its price range in whole currency units.
const KINDS: [(&str, u32, u32); 6] = [
    ("studio apartment", 20_000, 90_000),
    ("2-bedroom apartment", 60_000, 250_000),
    ("3-bedroom house", 150_000, 900_000),
    ("4-bedroom villa", 400_000, 3_500_000),
    ("beach cottage", 120_000, 1_200_000),
    ("plot of land", 30_000, 2_000_000),
];
const FEATURES: [&str; 10] = [
    "sea view",
    "private garden",
    "borehole water",
    "solar power",
    "swimming pool",
    "walking distance to the beach",
    "gated community",
    "high-speed internet",
    "servant quarters",
    "ample parking",
];

fn listing(rng: &mut StdRng) -> anyhow::Result<NewProperty> {
    let location = LOCATIONS[rng.random_range(0..LOCATIONS.len())];
    let (kind, low, high) = KINDS[rng.random_range(0..KINDS.len())];
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let first = FEATURES[rng.random_range(0..FEATURES.len())];
    let second = FEATURES[rng.random_range(0..FEATURES.len())];
    let title = format!("{adjective} {kind} in {location}");
    let description = format!(
        "{adjective} {kind} with {first} and {second}. Close to shops and schools in {location}."
    );
    let price = format!(
        "{}.{:02}",
        rng.random_range(low..=high),
        rng.random_range(0..100)
    );
    NewProperty::parse(PropertyInput {
        title: Some(&title),
        description: Some(&description),
        price: Some(&price),
        location: Some(location),
    })
    .map_err(|e| anyhow::anyhow!("generated an invalid listing ({e}); this is a bug"))
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    const BATCH: u32 = 1000;
    let app = App::connect(global.settings()).await?;
    let mut rng = match opts.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let mut remaining = opts.count;
    let next_batch = move || -> anyhow::Result<Option<Vec<NewProperty>>> {
        let size = remaining.min(BATCH);
        remaining -= size;
        let batch = (0..size)
            .map(|_| listing(&mut rng))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((!batch.is_empty()).then_some(batch))
    };
    let mut progress = Progress::new(u64::from(opts.count), "seeding");
    let inserted = service::properties::import_properties(&app, next_batch, |done| {
        progress.update(done as u64)
    })
    .await;
    settle_unconfirmed_writes(&app).await;
    let inserted = inserted.context("seeding was rolled back; nothing was added")?;
    progress.finish();
    println!("Added {inserted} generated properties.");
    Ok(())
}
