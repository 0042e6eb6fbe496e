//! docs/http.md stays true: every ```sh block in it is run, in order, against a fresh
//! `annal serve`, and must answer the status its `# →` line says.

mod common;

use std::path::Path;
use std::process::Command;

/// (the command, the expected status) of each example, in order.
fn examples(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in doc.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(Vec::new()),
            (Some(lines), "```") => {
                let status = lines
                    .iter()
                    .find_map(|l| l.strip_prefix("# → "))
                    .expect("each example says its status with '# → NNN'")
                    .trim()
                    .to_owned();
                let command: Vec<&str> = lines
                    .iter()
                    .copied()
                    .filter(|l| !l.starts_with('#'))
                    .collect();
                out.push((command.join("\n"), status));
                block = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn every_curl_example_in_the_http_docs_answers_as_documented() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/http.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/http.md");
    let examples = examples(&doc);
    assert!(examples.len() >= 20, "found {} examples", examples.len());

    let dir = tempfile::tempdir().expect("dir");
    let server = common::serve(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", server.port);
    let mut failures = Vec::new();
    for (command, want) in &examples {
        // Print only the status code; the body is the reader's, not the test's.
        let run = command.replacen("curl ", "curl -s -o /dev/null -w '%{http_code}' ", 1);
        let out = Command::new("bash")
            .args(["-c", &run])
            .env("ANNAL", &base)
            .output()
            .expect("bash");
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if &got != want {
            failures.push(format!("{command}\n  documented {want}, got {got}"));
        }
    }
    drop(server);
    assert!(
        failures.is_empty(),
        "docs/http.md is out of date:\n{}",
        failures.join("\n")
    );
}
