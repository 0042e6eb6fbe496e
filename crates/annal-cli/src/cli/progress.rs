//! Progress for people: one line on stderr, redrawn in place, while a long command runs
//! (copy, verify, backup, append from a file or a pipe).
//!
//! Invariants:
//! - nothing is drawn unless stderr is a terminal: a pipe, a file or a CI log gets no
//!   progress, and stdout (the command's answer) is never touched;
//! - the line is dimmed only where colour is allowed (stderr a terminal, `NO_COLOR`
//!   unset or empty); without colour it is plain text, with no escape of any kind;
//! - it is redrawn at most every [`EVERY`], so a fast loop is not slowed by the
//!   terminal, and a shorter line is padded over the longer one it replaces;
//! - [`Progress::finish`] wipes it, so what is printed next starts on a clean line.

use anstyle::Style;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// The shortest time between two redraws.
pub const EVERY: Duration = Duration::from_millis(100);

/// A progress line on stderr (inert when stderr is not a terminal).
#[derive(Debug)]
pub struct Progress {
    shown: bool,
    colour: bool,
    started: Instant,
    drawn_at: Option<Instant>,
    width: usize,
}

impl Progress {
    /// A progress line, drawn only if stderr is a terminal.
    pub fn on_stderr() -> Self {
        let shown = std::io::stderr().is_terminal();
        let colour = shown && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            shown,
            colour,
            started: Instant::now(),
            drawn_at: None,
            width: 0,
        }
    }

    /// The same line, drawn only if `also` holds too (e.g. stdout is not the same
    /// terminal, where the command's own lines would break it up).
    pub fn only_if(mut self, also: bool) -> Self {
        self.shown &= also;
        self.colour &= also;
        self
    }

    /// Whether anything is drawn (stderr is a terminal).
    pub fn shown(&self) -> bool {
        self.shown
    }

    /// How long since the line was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Redraws the line as `text`, unless it was drawn less than [`EVERY`] ago.
    pub fn set(&mut self, text: &str) {
        if !self.shown || self.drawn_at.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.drawn_at = Some(Instant::now());
        let pad = self.width.saturating_sub(text.chars().count());
        self.width = text.chars().count();
        let style = if self.colour {
            Style::new().dimmed()
        } else {
            Style::new()
        };
        // A progress line that cannot be drawn is not worth failing the command for.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{style}{text}{style:#}{}", " ".repeat(pad));
        let _ = err.flush();
    }

    /// Wipes the line.
    pub fn finish(&mut self) {
        if self.shown && self.drawn_at.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(self.width));
            let _ = err.flush();
        }
        self.drawn_at = None;
        self.width = 0;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// "`doing`: N of TOTAL events (P%), R events/s": the line of a command that knows how
/// much there is to do.
pub fn of_total(doing: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let pct = done.saturating_mul(100) / total.max(1);
    format!(
        "{doing}: {done} of {total} events ({pct}%), {} events/s",
        rate(done, elapsed)
    )
}

/// Whole things per second, 0 before any time has passed.
pub fn rate(done: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros();
    if micros == 0 {
        return 0;
    }
    u64::try_from(u128::from(done) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

/// A size in MiB with one decimal, as people read it.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_a_total_says_how_far_and_how_fast() {
        assert_eq!(
            of_total("verifying", 250, 1000, Duration::from_secs(2)),
            "verifying: 250 of 1000 events (25%), 125 events/s"
        );
    }

    #[test]
    fn an_empty_total_or_no_time_yet_does_not_divide_by_zero() {
        assert_eq!(
            of_total("copying", 0, 0, Duration::ZERO),
            "copying: 0 of 0 events (0%), 0 events/s"
        );
    }

    #[test]
    fn sizes_are_shown_in_mib() {
        assert_eq!(mib(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }

    #[test]
    fn a_line_is_drawn_at_most_every_hundred_milliseconds() {
        let mut p = Progress {
            shown: true,
            colour: false,
            started: Instant::now(),
            drawn_at: None,
            width: 0,
        };
        p.set("first");
        let first = p.drawn_at;
        p.set("second, at once");
        assert_eq!(p.drawn_at, first, "not redrawn within EVERY");
        assert_eq!(p.width, "first".len());
        p.finish();
        assert_eq!((p.drawn_at, p.width), (None, 0), "finished: nothing left");
    }
}
