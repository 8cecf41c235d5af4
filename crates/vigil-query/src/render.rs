//! Rendering query results for people and tools: an aligned text table,
//! CSV with a header, JSON Lines (one object per row, nulls explicit), or
//! an HTML table (every cell escaped).
//!
//! Timestamps render as RFC 3339 in UTC in every format.

use std::fmt;
use std::str::FromStr;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder as JsonWriterBuilder};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::error::{QueryError, Result};

/// Output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Aligned text table (Arrow's pretty printer), for terminals.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON Lines: one JSON object per row, with explicit `null`s.
    Json,
    /// HTML: a `<table>` element for query results, a whole self-contained
    /// document for reports ([`crate::report::html`]).
    Html,
}

impl Format {
    /// Every format, for help texts.
    pub const ALL: [Format; 4] = [Format::Table, Format::Csv, Format::Json, Format::Html];

    /// Lower-case name, as accepted by [`Format::from_str`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of `table`, `csv`, `json`, `html`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?} (expected table, csv, json or html)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" | "jsonl" | "ndjson" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Renders batches (all with one schema) in `format`. A table or CSV of
/// zero rows still shows the header when at least one (empty) batch is
/// given, as [`crate::QuerySession::sql`] guarantees; so does HTML.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    let err = |source| QueryError::Render { format, source };
    match format {
        Format::Html => crate::report::html::table(batches).map_err(err),
        Format::Table => Ok(format!(
            "{}\n",
            pretty_format_batches(batches).map_err(err)?
        )),
        Format::Csv => {
            let mut out = Vec::new();
            {
                // The header is written with the first batch, even an empty one.
                let mut w = CsvWriterBuilder::new().with_header(true).build(&mut out);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
            }
            String::from_utf8(out).map_err(|e| err(ArrowError::CsvError(e.to_string())))
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = JsonWriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut out);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
                w.finish().map_err(err)?;
            }
            String::from_utf8(out).map_err(|e| err(ArrowError::JsonError(e.to_string())))
        }
    }
}
