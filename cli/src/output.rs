//! Data in the format the user asked for: aligned columns, JSON or YAML of the same records.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::args::Format;
use crate::ui;

/// A table: a header row, rows, and section rows (a header row in the middle, as in
/// `infra grants list`'s `USER (1)` / `GROUP (2)`). Columns are aligned across all of them.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        let mut t = Table::default();
        t.row(header);
        t
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Renders `data` as JSON or YAML, or with `table` for people.
pub fn render<T: Serialize>(
    format: Format,
    data: &T,
    table: impl FnOnce() -> String,
) -> Result<String> {
    Ok(match format {
        Format::Table => table(),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(data).context("encoding JSON")?;
            text.push('\n');
            text
        }
        Format::Yaml => serde_saphyr::to_string(data).context("encoding YAML")?,
    })
}

/// Renders and writes to stdout.
pub fn emit<T: Serialize>(format: Format, data: &T, table: impl FnOnce() -> String) -> Result<()> {
    ui::out(&render(format, data, table)?)
}

/// A time for a table cell; `-` when absent.
pub fn time(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_across_sections() {
        let mut t = Table::new(["USER (1)", "ROLE", "DESTINATION"]);
        t.row(["suzie@example.com", "admin", "production"]);
        t.row(["GROUP (2)", "ROLE", "DESTINATION"]);
        t.row(["Engineering", "view", "production"]);
        assert_eq!(
            t.render(),
            "USER (1)            ROLE    DESTINATION\n\
             suzie@example.com   admin   production\n\
             GROUP (2)           ROLE    DESTINATION\n\
             Engineering         view    production\n"
        );
    }
}
