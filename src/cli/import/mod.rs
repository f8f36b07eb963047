//! `listings import FILE`: CSV (with a header row) or JSON lines, parsed with the same
//! type and rules as the HTTP API's bodies (`domain::PropertyFields`). Every row is
//! validated first and every bad row reported with its line number and field; then all
//! rows are inserted in batches inside one transaction, or none are; one invalidation at
//! the end. The file is read twice, row by row, and never held in memory.

mod rows;

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::cli::progress::Progress;
use crate::cli::{GlobalOpts, settle_unconfirmed_writes};
use crate::domain::NewProperty;
use crate::service;
use crate::service::App;
pub use rows::{Format, MAX_ROW_BYTES};

#[derive(Debug, Args)]
pub struct Opts {
    /// A .csv file with a header row (title, price, location, and optionally
    /// description), or a .jsonl file with one JSON object per line
    pub file: PathBuf,
    /// Overrides the format the file's extension implies
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Rows per INSERT statement
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_size: u32,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
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

/// The file is read twice (validate, then insert): a pipe would be empty the second time.
fn check_readable_twice(path: &Path) -> anyhow::Result<()> {
    let kind = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .file_type();
    if kind.is_fifo() || kind.is_socket() {
        anyhow::bail!(
            "{} is a pipe or socket; import reads its file twice (to validate, then to insert), so save the data to a file first",
            path.display()
        );
    }
    if kind.is_dir() {
        anyhow::bail!("{} is a directory", path.display());
    }
    Ok(())
}

fn to_property(row: rows::Row) -> Result<NewProperty, String> {
    NewProperty::parse(row?.input()).map_err(|e| e.to_string())
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let format = match opts.format {
        Some(format) => format,
        None => format_of(&opts.file)?,
    };
    check_readable_twice(&opts.file)?;
    // Pass 1: validate everything, reporting bad rows as they are found.
    let mut valid = 0u64;
    let mut bad = 0u64;
    for row in rows::rows(&opts.file, format)? {
        let (line, row) = row.context("nothing was imported")?;
        match to_property(row) {
            Ok(_) => valid += 1,
            Err(why) => {
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
    // Pass 2: insert in batches, in one transaction; any surprise rolls it back.
    let app = App::connect(global.settings()).await?;
    let mut source = rows::rows(&opts.file, format)?;
    let batch_size = opts.batch_size as usize;
    let mut seen = 0u64;
    let next_batch = move || -> anyhow::Result<Option<Vec<NewProperty>>> {
        let mut batch = Vec::with_capacity(batch_size);
        for row in source.by_ref().take(batch_size) {
            let (line, row) = row?;
            seen += 1;
            batch
                .push(to_property(row).map_err(|why| {
                    anyhow::anyhow!("line {line} changed while importing: {why}")
                })?);
        }
        if batch.is_empty() && seen != valid {
            anyhow::bail!("the file changed while importing ({valid} rows validated, {seen} read)");
        }
        Ok((!batch.is_empty()).then_some(batch))
    };
    let mut progress = Progress::new(valid, "importing");
    let imported = service::properties::import_properties(&app, next_batch, |done| {
        progress.update(done as u64)
    })
    .await;
    settle_unconfirmed_writes(&app).await;
    let imported = imported.context("the import was rolled back; nothing was imported")?;
    progress.finish();
    println!(
        "Imported {imported} properties from {}.",
        opts.file.display()
    );
    Ok(())
}
