//! The newcomer's path, run as written on one fresh store: every `sh` block of the
//! README's tour (but the one that installs the commands), in order, in one empty
//! folder, with `annal` and `coop` from this build on PATH; then `annal serve` on the
//! store the tour wrote, and every `sh` block of docs/http.md against it, each answering
//! the status its `# →` line says. The story must carry through: what each step writes
//! is what the next ones show, and the family's events stay valid co-op events.

mod common;

use common::docs::{http_examples, tour_blocks};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding this build's `annal` and `coop`.
fn bin_dir() -> PathBuf {
    let annal = PathBuf::from(env!("CARGO_BIN_EXE_annal"));
    let dir = annal.parent().expect("a folder").to_path_buf();
    assert!(
        dir.join("coop").exists(),
        "the tour needs coop beside annal in {}: cargo build -p annal-example-coop (the \
         workspace's nextest run builds it)",
        dir.display()
    );
    dir
}

/// Runs `script` with bash in `dir`, this build's commands first on PATH.
fn sh(dir: &Path, script: &str, annal: Option<&str>) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", &path)
        .env_remove("ANNAL_STORE")
        .env_remove("ANNAL_SERVER");
    if let Some(base) = annal {
        command.env("ANNAL", base);
    }
    command.output().expect("bash")
}

/// The key-encryption key file the tour makes (its first block), in `dir`.
fn kek_file(dir: &Path) -> PathBuf {
    dir.join("annal-kek.hex")
}

/// Runs the tour's blocks in `dir`, as one terminal would: what a block exports is set
/// for the blocks after it; what they printed.
fn run_tour(dir: &Path) -> String {
    let blocks: Vec<String> = tour_blocks()
        .into_iter()
        .filter(|b| !b.contains("cargo install"))
        .collect();
    assert!(blocks.len() >= 4, "the tour's blocks: {blocks:?}");
    let mut said = String::new();
    let mut exported = String::new();
    for block in &blocks {
        let out = sh(dir, &format!("{exported}{block}"), None);
        for line in block.lines().filter(|l| l.starts_with("export ")) {
            exported.push_str(line);
            exported.push('\n');
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "this block of the README failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said.push_str(&stdout);
    }
    said
}

/// Runs docs/http.md's examples against `annal serve` on the store in `dir`; the ones
/// that did not answer their documented status.
fn run_http_docs(dir: &Path) -> Vec<String> {
    let examples = http_examples();
    assert!(examples.len() >= 20, "found {} examples", examples.len());
    let data = dir.join("annal-data");
    let kek = kek_file(dir);
    let server = common::serve_with_env(
        &["--data", data.to_str().expect("a UTF-8 path")],
        &[("ANNAL_KEK_FILE", kek.as_os_str())],
    );
    let base = format!("http://127.0.0.1:{}", server.port);
    let mut failures = Vec::new();
    for (command, want) in &examples {
        // Print only the status code; the body is the reader's, not the test's.
        let run = command.replacen("curl ", "curl -s -o /dev/null -w '%{http_code}' ", 1);
        let out = sh(dir, &run, Some(&base));
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if &got != want {
            failures.push(format!("{command}\n  documented {want}, got {got}"));
        }
    }
    failures
}

#[test]
fn the_readme_tour_then_the_http_docs_run_as_written_and_tell_one_story() {
    let dir = tempfile::tempdir().expect("dir");
    let said = run_tour(dir.path());
    // The story carried through: the demo's payment and the tour's October payment are
    // both read back, and the state now holds both.
    let payments = said
        .lines()
        .filter(|l| l.contains(r#""event_type":"PaymentReceived""#))
        .count();
    assert!(payments >= 2, "both payments were read back:\n{said}");
    assert!(
        said.contains("2024-10-15"),
        "the October payment is in the state:\n{said}"
    );
    // How the family paid is personal: sealed, never in the clear data.
    assert!(
        said.contains(r#""personal":{"method":"credit_card"}"#)
            && said.contains(r#""data":{"amount":450,"date":"2024-10-15"}"#),
        "the October payment's method is its personal part:\n{said}"
    );
    assert!(
        dir.path().join("annal-backup.db").exists(),
        "the backup was written"
    );

    let failures = run_http_docs(dir.path());
    assert!(
        failures.is_empty(),
        "docs/http.md does not continue the tour's story:\n{}",
        failures.join("\n")
    );

    // What the HTTP examples wrote is the co-op's story too: the November payment and
    // the engagement score are in the family's state.
    assert!(
        kek_file(dir.path()).exists(),
        "the tour made its key-encryption key"
    );
    let state = sh(
        dir.path(),
        "ANNAL_KEK_FILE=\"$PWD/annal-kek.hex\" coop state family_123",
        None,
    );
    let state_text = String::from_utf8_lossy(&state.stdout);
    assert!(
        state.status.success(),
        "{state_text}{}",
        String::from_utf8_lossy(&state.stderr)
    );
    assert!(
        state_text.contains("2024-11-15") && state_text.contains(r#""engagement_score": 5"#),
        "the HTTP examples' events are the family's:\n{state_text}"
    );
}
