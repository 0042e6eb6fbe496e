//! The README's tour, run as written: every `sh` block between "A short tour" and
//! "Layout" (but the one that installs the commands), in order, in one empty folder,
//! with `annal` and `coop` from this build on PATH. Each block must succeed, and the
//! story must carry through: what the tour appends is what the reads then show.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sh` blocks of the tour.
fn tour_blocks() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let start = text.find("## A short tour").expect("the tour's heading");
    let end = start + text[start..].find("\n## Layout").expect("the next heading");
    let mut blocks = Vec::new();
    let mut rest = &text[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

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

#[test]
fn the_readme_tour_runs_as_written_and_tells_one_story() {
    let dir = tempfile::tempdir().expect("dir");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let blocks: Vec<String> = tour_blocks()
        .into_iter()
        .filter(|b| !b.contains("cargo install"))
        .collect();
    assert!(blocks.len() >= 4, "the tour's blocks: {blocks:?}");
    let mut said = String::new();
    for block in &blocks {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("ANNAL_STORE")
            .env_remove("ANNAL_SERVER")
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "this block of the README failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said.push_str(&stdout);
    }
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
    assert!(
        dir.path().join("annal-backup.db").exists(),
        "the backup was written"
    );
}
