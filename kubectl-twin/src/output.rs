//! Output: aligned tables for people, JSON and YAML for scripts, and text progress bars.

use anyhow::Context as _;
use serde::Serialize;

/// indicatif template of a followed request's bar.
pub const REQUEST_BAR: &str = "{bar:30.cyan/blue} {pos:>3}%  {msg}";
/// indicatif template of a job's overall and per-wave bars.
pub const JOB_BAR: &str = "{prefix:<9} {bar:40.cyan/blue} {pos}/{len}  {percent}%";
/// indicatif template of a line of text among the bars.
pub const TEXT_LINE: &str = "{msg}";

/// The indicatif style of `template` (the templates above are checked by a test, so the
/// default bar only stands in for a template this program does not use).
pub fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// How a command prints its result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

/// Prints `value` as JSON or YAML (`Table` is the caller's to print).
pub fn print_data<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
            println!("{text}");
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(value).context("encoding YAML")?;
            print!("{text}");
        }
        Format::Table => {}
    }
    Ok(())
}

/// Columns aligned like kubectl's: upper-case headers, three spaces between columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

/// A text bar `[#####.....]  370/1000  37%` of `width` characters.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let done = done.min(total);
    let filled =
        (done * width as u64).checked_div(total).map_or(0, |f| usize::try_from(f).unwrap_or(width));
    let percent = (done * 100).checked_div(total).unwrap_or(0);
    format!("[{}{}]  {done}/{total}  {percent}%", "#".repeat(filled), ".".repeat(width - filled))
}

/// `None` as `-`, like kubectl's `<none>` but shorter.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let rows = vec![
            vec!["gw-1".to_string(), "Connected".to_string()],
            vec!["gateway-22".to_string(), "-".to_string()],
        ];
        assert_eq!(
            table(&["name", "connection"], &rows),
            "NAME         CONNECTION\ngw-1         Connected\ngateway-22   -\n"
        );
    }

    #[test]
    fn the_bar_templates_parse() {
        for template in [REQUEST_BAR, JOB_BAR, TEXT_LINE] {
            assert!(indicatif::ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 10, 10), "[..........]  0/10  0%");
        assert_eq!(bar(370, 1000, 10), "[###.......]  370/1000  37%");
        assert_eq!(bar(5, 5, 4), "[####]  5/5  100%");
        assert_eq!(bar(0, 0, 4), "[....]  0/0  0%");
    }
}
