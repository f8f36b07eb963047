//! `listings list-properties`: the same search as `GET /properties/`, as a table or JSON.

use anyhow::Context as _;
use clap::Args;

use crate::cli::GlobalOpts;
use crate::domain::Property;
use crate::domain::PropertyQuery;
use crate::service;
use crate::service::App;

#[derive(Debug, Args)]
pub struct Opts {
    /// Exact location; case and the form of accents do not matter
    #[arg(long)]
    pub location: Option<String>,
    /// Lowest price, inclusive
    #[arg(long, allow_hyphen_values = true)]
    pub min_price: Option<String>,
    /// Highest price, inclusive
    #[arg(long, allow_hyphen_values = true)]
    pub max_price: Option<String>,
    /// Substring of the title or the description, compared as location is
    #[arg(long)]
    pub search: Option<String>,
    /// price, -price, created_at, -created_at, id or -id
    #[arg(long, allow_hyphen_values = true, default_value = "-created_at")]
    pub ordering: String,
    /// Page number, from 1
    #[arg(long, default_value = "1")]
    pub page: String,
    /// Page size, 1 to 1000
    #[arg(long, default_value = "100")]
    pub page_size: String,
    /// Print one JSON object ({"count": N, "data": [...]}) instead of a table
    #[arg(long, conflicts_with = "sql")]
    pub json: bool,
    /// Print the SQL statement this search runs on a cache miss (its values written in,
    /// the count included) instead of running it: for EXPLAIN, or pgbench. Needs no
    /// connection. Not for --search, which reads its rows and count in two statements
    #[arg(long, conflicts_with = "search")]
    pub sql: bool,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let mut pairs = vec![
        ("ordering", opts.ordering.as_str()),
        ("page", opts.page.as_str()),
        ("page_size", opts.page_size.as_str()),
    ];
    for (name, value) in [
        ("location", &opts.location),
        ("min_price", &opts.min_price),
        ("max_price", &opts.max_price),
        ("search", &opts.search),
    ] {
        if let Some(value) = value {
            pairs.push((name, value.as_str()));
        }
    }
    let query = PropertyQuery::from_pairs(pairs)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.rule))?;
    if opts.sql {
        let settings = global.settings();
        let statement = service::properties::page_statement(&settings.database_url, &query)
            .context("a text search runs no single statement")?;
        println!("{statement};");
        return Ok(());
    }
    let app = App::connect(global.settings()).await?;
    let (stored, _) = service::properties::list_properties(&app, &query)
        .await
        .context("cannot list properties")?;
    let page = stored.page;
    app.flush_counts().await;
    if opts.json {
        // The API's page without its URLs, fields in the API's order.
        println!("{}", serde_json::to_string(&page)?);
    } else {
        print!("{}", render_table(&page.data));
        let first = query.offset() + 1;
        let last = query.offset() + page.data.len() as i64;
        if page.data.is_empty() {
            println!(
                "No properties on page {} ({} match in all).",
                query.page, page.count
            );
        } else {
            println!("{first}-{last} of {} (page {})", page.count, query.page);
        }
    }
    Ok(())
}

/// Columns sized to their content; long titles and locations are cut with an ellipsis.
fn render_table(rows: &[Property]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let cut = |text: &str, max: usize| {
        if text.chars().count() <= max {
            text.to_owned()
        } else {
            format!("{}…", text.chars().take(max - 1).collect::<String>())
        }
    };
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|p| {
            [
                p.id.to_string(),
                cut(&p.title, 40),
                p.price_text(),
                cut(&p.location, 20),
                p.created_at.format("%Y-%m-%d %H:%M").to_string(),
            ]
        })
        .collect();
    let headers = ["ID", "TITLE", "PRICE", "LOCATION", "CREATED (UTC)"];
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: [&str; 5]| {
        let mut out = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            // Numbers align right, text left.
            if i == 0 || i == 2 {
                out += &format!("{}{cell}  ", " ".repeat(pad));
            } else {
                out += &format!("{cell}{}  ", " ".repeat(pad));
            }
        }
        format!("{}\n", out.trim_end())
    };
    let mut table = line(headers);
    for row in &cells {
        table += &line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    table
}
