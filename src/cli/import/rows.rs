//! Import files read row by row, in bounded memory: no line (JSON lines) or record (CSV,
//! where a quoted field may span lines) may be longer than [`MAX_ROW_BYTES`], and a
//! longer one is refused as soon as that many bytes have been read, with its line
//! number, so `import /dev/zero` fails at once instead of filling memory.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read};
use std::path::Path;

use anyhow::Context as _;

use crate::domain::{FIELD_NAMES, PropertyFields, text};

/// The longest line or record import reads: far more than any valid property needs.
pub const MAX_ROW_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// A row's fields, or why they cannot be read; either way reading goes on.
pub type Row = Result<PropertyFields, String>;

/// Rows with the line they start on. An `Err` item means the file cannot be read any
/// further (an I/O error, a row over the size limit, a bad CSV header).
pub type Rows = Box<dyn Iterator<Item = anyhow::Result<(u64, Row)>> + Send>;

pub fn rows(path: &Path, format: Format) -> anyhow::Result<Rows> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match format {
        Format::Csv => csv_rows(LineLimit::new(file, true)),
        Format::Jsonl => Ok(Box::new(jsonl_rows(LineLimit::new(file, false)))),
    }
}

fn csv_rows(source: LineLimit<File>) -> anyhow::Result<Rows> {
    // Spaces around a cell are padding (`Villa, 500.00, Malindi`), as CSV tools read it.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(source);
    let headers = reader
        .headers()
        .map_err(fatal_csv)
        .context("cannot read the CSV header row")?
        .clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| text::trim(h).to_ascii_lowercase())
        .collect();
    let unknown: Vec<String> = names
        .iter()
        .filter(|name| !FIELD_NAMES.contains(&name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "line 1: {}",
            crate::domain::unknown_fields_error(&unknown).rule
        );
    }
    for name in FIELD_NAMES {
        let columns = names.iter().filter(|n| *n == name).count();
        if columns > 1 {
            anyhow::bail!("line 1: the header names `{name}` {columns} times");
        }
        if columns == 0 && name != "description" {
            anyhow::bail!(
                "line 1: the header has no `{name}` column (needs title, price, location; description is optional)"
            );
        }
    }
    Ok(Box::new(reader.into_records().map(
        move |record| match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                let mut fields = PropertyFields::default();
                for (name, value) in names.iter().zip(record.iter()) {
                    if let Some(slot) = fields.slot(name) {
                        *slot = Some(value.to_owned());
                    }
                }
                Ok((line, Ok(fields)))
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => Err(fatal_csv(e)),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                Ok((line, Err(format!("unreadable CSV: {e}"))))
            }
        },
    )))
}

/// An I/O error inside a CSV error: say the I/O error (it names the line), not csv's
/// wrapping of it.
fn fatal_csv(e: csv::Error) -> anyhow::Error {
    if !matches!(e.kind(), csv::ErrorKind::Io(_)) {
        return anyhow::Error::new(e);
    }
    match e.into_kind() {
        csv::ErrorKind::Io(io) => anyhow::Error::new(io),
        other => anyhow::anyhow!("{other:?}"),
    }
}

fn jsonl_rows(source: LineLimit<File>) -> impl Iterator<Item = anyhow::Result<(u64, Row)>> + Send {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    let mut number = 0u64;
    std::iter::from_fn(move || {
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(_) => number += 1,
                Err(e) => return Some(Err(anyhow::Error::new(e))),
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let row = PropertyFields::from_json(&line).map_err(|e| e.to_string());
            return Some(Ok((number, row)));
        }
    })
}

/// A reader that refuses a line (or, for CSV, a record) longer than [`MAX_ROW_BYTES`],
/// naming the line it starts on.
struct LineLimit<R> {
    inner: R,
    /// CSV: a line break inside a quoted field does not end the record.
    csv: bool,
    in_quotes: bool,
    line: u64,
    row_starts_on: u64,
    row_bytes: usize,
}

impl<R> LineLimit<R> {
    fn new(inner: R, csv: bool) -> LineLimit<R> {
        LineLimit {
            inner,
            csv,
            in_quotes: false,
            line: 1,
            row_starts_on: 1,
            row_bytes: 0,
        }
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        for &byte in &buf[..read] {
            self.row_bytes += 1;
            if self.row_bytes > MAX_ROW_BYTES {
                let what = if self.csv { "row" } else { "line" };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {}: the {what} is longer than 1 MiB ({MAX_ROW_BYTES} bytes), the most import reads",
                        self.row_starts_on
                    ),
                ));
            }
            match byte {
                b'"' if self.csv => self.in_quotes = !self.in_quotes,
                b'\n' => {
                    self.line += 1;
                    if !self.in_quotes {
                        self.row_bytes = 0;
                        self.row_starts_on = self.line;
                    }
                }
                _ => {}
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_refused_after_the_limit_not_at_its_end() {
        let mut long = b"{\"title\": \"ok\"}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_ROW_BYTES + 10));
        let mut reader = LineLimit::new(io::Cursor::new(long), false);
        let e = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 2: the line is longer than 1 MiB"),
            "{e}"
        );
    }

    #[test]
    fn csv_records_may_span_lines_but_count_as_one_row() {
        let text = "a,\"one\ntwo\",b\nc\n";
        let mut reader = LineLimit::new(io::Cursor::new(text), true);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(reader.row_starts_on, 4);
        assert_eq!(reader.line, 4);
    }
}
