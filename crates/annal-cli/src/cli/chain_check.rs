//! The hash chain checked with progress on a terminal, for `annal verify`, and for the
//! copies `annal copy` and `annal backup` check before they report success.
//!
//! Invariant: the report is the one [`Store::verify`] (or [`Store::verify_deep`]) gives
//! for the same range, with or without progress. Without progress (stderr not a
//! terminal) it is that one call. With progress, the range is checked in consecutive
//! parts of [`PART`] events, each against its predecessor's stored hash as
//! `verify(from, to)` does, and the progress line is redrawn between parts; the first
//! part that fails ends the check, its `checked` counting the parts before it. A deep
//! check runs the store's own checks once, with the last part (or, after a part that
//! failed, with a check of the range's last event), so their findings are reported
//! either way. Over `--server` each part is one request, checked next to the data.

use super::CliError;
use super::progress::{Progress, of_total};
use annal::{Store, VerifyReport};

/// Events checked per call while progress is shown.
pub const PART: u64 = 16_384;

/// Checks the chain from `from` (default 1) to `to` (default: the head); `deep` adds
/// the store's own checks. `doing` names the work on the progress line ("verifying").
pub async fn check(
    store: &dyn Store,
    from: Option<u64>,
    to: Option<u64>,
    deep: bool,
    doing: &str,
) -> Result<VerifyReport, CliError> {
    let whole = |from, to| async move {
        if deep {
            store.verify_deep(from, to).await
        } else {
            store.verify(from, to).await
        }
    };
    let mut progress = Progress::on_stderr();
    if !progress.shown() {
        return Ok(whole(from, to).await?);
    }
    let head = store.head(&[]).await?;
    let first = from.unwrap_or(1).max(1);
    let last = to.unwrap_or(head).min(head);
    if first > last {
        // Nothing to check, or a range the store refuses: its own answer says which.
        return Ok(whole(from, to).await?);
    }
    let total = last - first + 1;
    let mut report = VerifyReport {
        ok: true,
        ..VerifyReport::default()
    };
    let mut start = first;
    while start <= last {
        let end = start.saturating_add(PART - 1).min(last);
        let at_end = end == last;
        let part = if at_end {
            whole(Some(start), Some(end)).await?
        } else {
            store.verify(Some(start), Some(end)).await?
        };
        report = VerifyReport {
            checked: report.checked + part.checked,
            ..part
        };
        if !report.ok {
            if deep && !at_end {
                report.storage = store.verify_deep(Some(last), Some(last)).await?.storage;
            }
            break;
        }
        progress.set(&of_total(doing, report.checked, total, progress.elapsed()));
        start = end + 1;
    }
    progress.finish();
    Ok(report)
}
