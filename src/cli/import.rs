//! `listings import FILE`: CSV (with a header row) or JSON lines. Every row is validated
//! first and every bad row reported with its line number; then all rows are inserted in
//! batches inside one transaction, or none are; one invalidation at the end. The file
//! is read twice and never held in memory.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::app::App;
use crate::cli::progress::Progress;
use crate::cli::{CacheOpts, DatabaseOpts, settings};
use crate::domain::{NewProperty, PropertyInput};
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// A .csv file with a header row (title, description, price, location), or a
    /// .jsonl file with one JSON object per line
    pub file: PathBuf,
    /// Overrides the format the file's extension implies
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Rows per INSERT statement
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_size: u32,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> anyhow::Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            _ => anyhow::bail!(
                "cannot tell the format of {} from its extension; pass --format csv or --format jsonl",
                path.display()
            ),
        }
    }
}

/// One row's fields as text, or why the row cannot be read.
type RawRow = Result<[Option<String>; 4], String>;

/// Rows with their line numbers, streamed from the file.
fn rows(
    path: &Path,
    format: Format,
) -> anyhow::Result<Box<dyn Iterator<Item = (u64, RawRow)> + Send>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match format {
        Format::Csv => csv_rows(file),
        Format::Jsonl => Ok(Box::new(jsonl_rows(file))),
    }
}

const COLUMNS: [&str; 4] = ["title", "description", "price", "location"];

fn csv_rows(file: File) -> anyhow::Result<Box<dyn Iterator<Item = (u64, RawRow)> + Send>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(file);
    let headers = reader
        .headers()
        .context("cannot read the CSV header row")?
        .clone();
    let positions: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        })
        .collect();
    for (name, position) in COLUMNS.iter().zip(&positions) {
        if position.is_none() && *name != "description" {
            anyhow::bail!(
                "line 1: the header has no `{name}` column (needs title, price, location; description is optional)"
            );
        }
    }
    Ok(Box::new(reader.into_records().map(
        move |record| match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let field = |i: usize| {
                    positions[i]
                        .and_then(|at| record.get(at))
                        .map(str::to_owned)
                };
                (line, Ok([field(0), field(1), field(2), field(3)]))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (line, Err(format!("unreadable CSV: {e}")))
            }
        },
    )))
}

fn jsonl_rows(file: File) -> impl Iterator<Item = (u64, RawRow)> + Send {
    BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(index, line)| (index as u64 + 1, line))
        .filter(|(_, line)| line.as_ref().map_or(true, |text| !text.trim().is_empty()))
        .map(|(number, line)| {
            let row = match line {
                Ok(text) => json_row(&text),
                Err(e) => Err(format!("unreadable line: {e}")),
            };
            (number, row)
        })
}

fn json_row(text: &str) -> RawRow {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("must be a JSON object".into());
    };
    let mut fields: [Option<String>; 4] = Default::default();
    for (i, name) in COLUMNS.iter().enumerate() {
        fields[i] = match object.get(*name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) if *name == "price" => Some(number.to_string()),
            Some(_) => return Err(format!("{name}: must be a string")),
        };
    }
    Ok(fields)
}

fn to_property(row: &[Option<String>; 4]) -> Result<NewProperty, String> {
    NewProperty::parse(PropertyInput {
        title: row[0].as_deref(),
        description: row[1].as_deref(),
        price: row[2].as_deref(),
        location: row[3].as_deref(),
    })
    .map_err(|e| e.to_string())
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let format = match opts.format {
        Some(format) => format,
        None => Format::of(&opts.file)?,
    };
    // Pass 1: validate everything.
    let mut valid = 0u64;
    let mut bad = 0u64;
    for (line, row) in rows(&opts.file, format)? {
        match row.and_then(|row| to_property(&row)) {
            Ok(_) => valid += 1,
            Err(why) => {
                // Reported as found, so a large bad file is not held in memory either.
                eprintln!("line {line}: {why}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        anyhow::bail!(
            "{bad} of {} rows are invalid; nothing was imported",
            valid + bad
        );
    }
    if valid == 0 {
        println!("No rows in {}; nothing to import.", opts.file.display());
        return Ok(());
    }
    // Pass 2: insert in batches, in one transaction.
    let app = App::connect(settings(&opts.db, &opts.cache)).await?;
    let mut source = rows(&opts.file, format)?;
    let batch_size = opts.batch_size as usize;
    let next_batch = move || -> anyhow::Result<Option<Vec<NewProperty>>> {
        let mut batch = Vec::with_capacity(batch_size);
        for (line, row) in source.by_ref().take(batch_size) {
            let property = row.and_then(|row| to_property(&row));
            batch
                .push(property.map_err(|why| {
                    anyhow::anyhow!("line {line} changed while importing: {why}")
                })?);
        }
        Ok((!batch.is_empty()).then_some(batch))
    };
    let mut progress = Progress::new(valid, "importing");
    let imported = services::properties::import_properties(&app, next_batch, |done| {
        progress.update(done as u64)
    })
    .await
    .context("the import was rolled back; nothing was imported")?;
    progress.finish();
    println!(
        "Imported {imported} properties from {}.",
        opts.file.display()
    );
    Ok(())
}
