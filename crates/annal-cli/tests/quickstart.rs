//! scripts/quickstart.sh tells the seed's story in lines a person reads: each step says
//! what it did, the history is annal's timeline, and no step prints raw JSON.

use std::path::Path;
use std::process::{Command, Output};

fn quickstart(tmp: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quickstart.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .env("ANNAL_BIN", env!("CARGO_BIN_EXE_annal"))
        .env("TMPDIR", tmp)
        .env_remove("ANNAL_STORE")
        .env_remove("ANNAL_SERVER")
        .output()
        .expect("bash")
}

#[test]
fn the_quickstart_tells_the_story_in_readable_lines_on_a_fresh_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = quickstart(tmp.path(), &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in said.lines() {
        assert!(
            !line.trim_start().starts_with('{'),
            "a raw JSON line:\n{line}\nin:\n{said}"
        );
    }
    for step in [
        "stored at positions 1-2; family_123 is now at version 2",
        "stored at position 3; family_123 is now at version 3",
        "family_123 (Family), 3 events",
        "correlation_id enrollment_abc123: 2 events",
        "intact: 3 events",
    ] {
        assert!(said.contains(step), "missing '{step}' in:\n{said}");
    }
}

#[test]
fn the_quickstart_refuses_a_store_that_already_holds_the_family() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = format!("sqlite:{}", tmp.path().join("told.db").display());
    let first = quickstart(tmp.path(), &[&store]);
    assert!(first.status.success(), "{first:?}");
    let again = quickstart(tmp.path(), &[&store]);
    assert!(!again.status.success(), "the family was enrolled twice");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("wrong expected version"),
        "{again:?}"
    );
}
