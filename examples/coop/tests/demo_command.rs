//! `coop demo` as a newcomer runs it: into the store `annal` uses in this folder, once,
//! or into a throwaway store with `--temp`.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `coop ARGS` in `dir`, with a key-encryption key made in `tmp` (the families'
/// personal data is sealed with it).
fn coop(dir: &Path, tmp: &Path, args: &[&str]) -> Output {
    let kek = tmp.join("annal-kek.hex");
    if !kek.exists() {
        std::fs::write(&kek, "3f".repeat(32)).expect("kek");
    }
    Command::new(env!("CARGO_BIN_EXE_coop"))
        .args(args)
        .current_dir(dir)
        .env_remove("ANNAL_STORE")
        .env_remove("ANNAL_KEK")
        .env("ANNAL_KEK_FILE", &kek)
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

#[test]
fn the_demo_asks_for_a_key_encryption_key_first_and_writes_nothing_without_one() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_coop"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("ANNAL_STORE")
        .env_remove("ANNAL_KEK")
        .env_remove("ANNAL_KEK_FILE")
        .output()
        .expect("coop runs");
    assert_eq!(out.status.code(), Some(1));
    let why = text(&out.stderr);
    assert!(
        why.contains("ANNAL_KEK_FILE") && why.contains("openssl rand -hex 32"),
        "{why}"
    );
    assert!(!dir.path().join("annal-data").exists());
}

#[test]
fn coop_forget_erases_a_familys_names_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let tmp = tempfile::tempdir().expect("tmp");
    let demo = coop(dir.path(), tmp.path(), &["demo"]);
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    assert!(text(&demo.stdout).contains("coop forget family_123"));

    let out = coop(
        dir.path(),
        tmp.path(),
        &["forget", "family_123", "--reason", "ticket 881"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let (before, after) = said.split_once("== family_123 after").expect("both");
    assert!(before.contains("Sofia Martinez"), "{before}");
    assert!(
        !after.contains("Sofia") && after.contains("$erased"),
        "{after}"
    );
    assert!(
        after.contains("ticket 881") && after.contains("verify: ok"),
        "{after}"
    );

    let state = coop(dir.path(), tmp.path(), &["state", "family_123"]);
    assert!(state.status.success(), "{}", text(&state.stderr));
    assert!(!text(&state.stdout).contains("Martinez Family"));

    let again = coop(dir.path(), tmp.path(), &["forget", "family_123"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains(r#""already":true"#));

    // A family the co-op never had: nothing to show, nothing forgotten.
    let unknown = coop(dir.path(), tmp.path(), &["forget", "family_999"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stdout).is_empty(),
        "{}",
        text(&unknown.stdout)
    );
    assert!(
        text(&unknown.stderr).contains("family_999"),
        "{}",
        text(&unknown.stderr)
    );
}
