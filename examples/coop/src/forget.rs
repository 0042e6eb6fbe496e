//! `coop forget FAMILY_ID`: a family's right to be forgotten (GDPR Art. 17), end to end,
//! on the store the demo wrote.
//!
//! It prints the family's timeline and state, forgets the family (annal destroys the
//! family's data key: docs/privacy.md), and prints them again: the same events at the
//! same positions, their personal fields now `"$erased": true`, the state without the
//! names, and the audit trail's `$subjectForgotten` event (who, when, why). Then it
//! verifies the whole hash chain, which still holds: it covers the ciphertext, which
//! never changed.
//!
//! Invariant: nothing but the key is destroyed; the command fails (exit 1) if the
//! chain does not verify afterwards.

use crate::demo::{DemoError, Target};
use crate::story::StoryError;
use crate::{Family, upcasters};
use annal::privacy::{ForgetRequest, Forgotten, SUBJECTS_STREAM};
use annal::{Direction, Repository, Store};
use std::io::Write;

/// The usage line of `coop forget`.
pub const USAGE: &str = "coop forget FAMILY_ID [--reason TEXT] [--store URL | --data DIR]";

/// The reason recorded when none is given.
const DEFAULT_REASON: &str = "erasure request (coop demo)";

/// What forgetting showed, for tests to check.
#[derive(Debug)]
pub struct Shown {
    /// The family's state before.
    pub before: Family,
    /// The family's state after.
    pub after: Family,
    /// What annal did.
    pub forgotten: Forgotten,
    /// How many of the family's events read as erased afterwards.
    pub erased_events: usize,
    /// Whether the chain verified afterwards.
    pub verified: bool,
}

/// The family, the reason and the store from the arguments after `forget`.
pub fn args(
    args: &[String],
    env_store: Option<String>,
) -> Result<(String, String, Target), DemoError> {
    let mut family = None;
    let mut reason = DEFAULT_REASON.to_owned();
    let mut store_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--reason" => {
                reason = it
                    .next()
                    .cloned()
                    .ok_or_else(|| DemoError::Usage("--reason needs a value".into()))?;
            }
            "--store" | "--data" => {
                store_args.push(arg.clone());
                store_args.extend(it.next().cloned());
            }
            flag if flag.starts_with("--") => {
                return Err(DemoError::Usage(format!("unexpected argument '{flag}'")));
            }
            id if family.is_none() => family = Some(id.to_owned()),
            other => return Err(DemoError::Usage(format!("unexpected argument '{other}'"))),
        }
    }
    let family = family.ok_or_else(|| DemoError::Usage("name the family to forget".into()))?;
    let target = crate::demo::target(&store_args, env_store)
        .map_err(|e| DemoError::Usage(e.to_string().replace(crate::demo::USAGE, USAGE)))?;
    Ok((family, reason, target))
}

/// Forgets `family` on `store` for `reason`, printing its timeline before and after.
pub async fn forget(
    store: std::sync::Arc<dyn Store>,
    family: &str,
    reason: &str,
    out: &mut impl Write,
) -> Result<Shown, StoryError> {
    if store.subject(family).await?.is_none() {
        // Nothing to show before, and nothing to forget.
        return Err(annal::Error::NotFound {
            what: format!("subject '{family}' (no personal data was ever stored for it)"),
        }
        .into());
    }
    let families = Repository::<Family>::new(store.clone()).with_upcasters(upcasters());
    writeln!(out, "== {family} before")?;
    timeline(&*store, family, out).await?;
    let before = families.load(family).await?.state;
    writeln!(out, "state: {}", serde_json::to_string(&before)?)?;

    writeln!(out, "\n== Forgetting {family}: {reason}")?;
    let forgotten = store
        .forget_subject(ForgetRequest {
            subject: family.to_owned(),
            reason: reason.to_owned(),
            user_id: Some("coop-admin".into()),
            principal: None,
        })
        .await?;
    writeln!(out, "{}", serde_json::to_string(&forgotten)?)?;

    writeln!(out, "\n== {family} after")?;
    let erased_events = timeline(&*store, family, out).await?;
    let after = families.load(family).await?.state;
    writeln!(out, "state: {}", serde_json::to_string(&after)?)?;

    writeln!(out, "\n== The audit trail keeps the forgetting")?;
    for e in store
        .read_aggregate(SUBJECTS_STREAM, Direction::Forward, None, 10_000)
        .await?
        .iter()
        .filter(|e| e.position == forgotten.position)
    {
        writeln!(
            out,
            "#{} {} by {} at {}: {}",
            e.position, e.event_type, e.user_id, e.recorded_at, e.data
        )?;
    }
    let report = store.verify(None, None).await?;
    writeln!(
        out,
        "\n== verify: {} ({} events, the chain covers the ciphertext, which did not change)",
        if report.ok { "ok" } else { "FAILED" },
        report.checked
    )?;
    Ok(Shown {
        before,
        after,
        forgotten,
        erased_events,
        verified: report.ok,
    })
}

/// Prints the family's events with their data as aggregates read it; answers how many
/// read as erased.
async fn timeline(
    store: &dyn Store,
    family: &str,
    out: &mut impl Write,
) -> Result<usize, StoryError> {
    let mut erased = 0;
    for e in store
        .read_aggregate(family, Direction::Forward, None, 10_000)
        .await?
    {
        erased += usize::from(e.is_erased());
        writeln!(
            out,
            "  #{} v{} {} {}",
            e.position,
            e.aggregate_version,
            e.event_type,
            e.payload()
        )?;
    }
    Ok(erased)
}
