//! Output for people: aligned columns, and colour only where a person reads it.
//!
//! Invariants:
//! - colour (ANSI escapes) is written only when stdout is a terminal and `NO_COLOR` is
//!   unset or empty (no-color.org); a pipe or a file gets plain text;
//! - a table is aligned on the widest cell of each column, counted in characters; the
//!   last column is never padded;
//! - a cell is one line: line breaks inside it are shown as spaces.

use anstyle::{AnsiColor, Style};
use std::io::{IsTerminal as _, Write};

/// Whether to colour what goes to stdout.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How a cell is drawn when colour is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Plain,
    /// What a row is about (an event type).
    Strong,
    /// Background detail (times, ids).
    Dim,
    /// What needs attention (a correction).
    Warn,
}

impl Look {
    fn style(self) -> Style {
        match self {
            Look::Plain => Style::new(),
            Look::Strong => Style::new().bold(),
            Look::Dim => Style::new().dimmed(),
            Look::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        }
    }
}

/// A table of text cells with a header row.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<(String, Look)>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as the header has columns).
    pub fn row(&mut self, cells: Vec<(String, Look)>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|(text, look)| (text.replace(['\n', '\r'], " "), look))
                .collect(),
        );
    }

    /// Writes the header and the rows, aligned; `colour` as [`colour`] decided.
    pub fn write(&self, out: &mut impl Write, colour: bool) -> std::io::Result<()> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, (text, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(text.chars().count());
            }
        }
        let header: Vec<(String, Look)> =
            self.header.iter().map(|h| (h.clone(), Look::Dim)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, ((text, look), width)) in row.iter().zip(&widths).enumerate() {
                let last = i + 1 == columns;
                let pad = if last {
                    0
                } else {
                    width.saturating_sub(text.chars().count())
                };
                if colour && *look != Look::Plain {
                    let style = look.style();
                    line.push_str(&format!("{style}{text}{style:#}"));
                } else {
                    line.push_str(text);
                }
                if !last {
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_on_their_widest_cell_and_plain_without_colour() {
        let mut t = Table::new(&["POS", "EVENT", "BY"]);
        t.row(vec![
            ("#1".into(), Look::Plain),
            ("FamilyEnrolled".into(), Look::Strong),
            ("sarah".into(), Look::Plain),
        ]);
        t.row(vec![
            ("#12".into(), Look::Plain),
            ("Paid\nlate".into(), Look::Warn),
            ("tom".into(), Look::Plain),
        ]);
        let mut out = Vec::new();
        t.write(&mut out, false).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "POS  EVENT           BY\n#1   FamilyEnrolled  sarah\n#12  Paid late       tom\n"
        );
    }

    #[test]
    fn colour_wraps_styled_cells_in_escapes() {
        let mut t = Table::new(&["EVENT"]);
        t.row(vec![("Paid".into(), Look::Strong)]);
        let mut out = Vec::new();
        t.write(&mut out, true).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\u{1b}[1mPaid\u{1b}[0m"), "{text:?}");
    }

    #[test]
    fn long_text_is_clipped_with_an_ellipsis() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
