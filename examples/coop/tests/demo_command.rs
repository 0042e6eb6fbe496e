//! `coop demo` as a newcomer runs it: into the store `annal` uses in this folder, once,
//! or into a throwaway store with `--temp`.

use std::path::Path;
use std::process::{Command, Output};

fn coop(dir: &Path, tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coop"))
        .args(args)
        .current_dir(dir)
        .env_remove("ANNAL_STORE")
        .env("TMPDIR", tmp)
        .output()
        .expect("coop runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_demo_writes_into_annals_default_store_and_is_told_once() {
    let dir = tempfile::tempdir().expect("dir");
    let tmp = tempfile::tempdir().expect("tmp");
    let first = coop(dir.path(), tmp.path(), &["demo"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        dir.path().join("annal-data/annal.db").exists(),
        "the story is in ./annal-data/annal.db, where annal looks"
    );
    let said = text(&first.stdout);
    assert!(
        said.contains("annal audit family_123\n"),
        "the next commands need no --store:\n{said}"
    );

    let state = coop(dir.path(), tmp.path(), &["state", "family_123"]);
    assert!(state.status.success(), "{}", text(&state.stderr));
    assert!(text(&state.stdout).contains("Martinez Family"));

    let again = coop(dir.path(), tmp.path(), &["demo"]);
    assert_eq!(again.status.code(), Some(1));
    let why = text(&again.stderr);
    assert!(
        why.contains("already holds family_123") && why.contains("coop demo --temp"),
        "{why}"
    );
}

#[test]
fn temp_tells_the_story_into_a_throwaway_store_and_leaves_the_folder_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let tmp = tempfile::tempdir().expect("tmp");
    let out = coop(dir.path(), tmp.path(), &["demo", "--temp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("annal-data").exists());
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("--store sqlite:{}", tmp.path().display())),
        "the next commands name the throwaway store:\n{said}"
    );
}
