//! The runnable examples of the README's tour and of docs/http.md, as the tests that
//! run them read them.

use std::path::Path;

fn doc(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `sh` blocks of the README between "A short tour" and the next top heading
/// ("In Rust"), in order.
pub fn tour_blocks() -> Vec<String> {
    let text = doc("README.md");
    let start = text.find("## A short tour").expect("the tour's heading");
    let end = start + 3 + text[start + 3..].find("\n## ").expect("the next heading");
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

/// (the command, the status its `# → NNN` line promises) of each `sh` block of
/// docs/http.md, in order.
pub fn http_examples() -> Vec<(String, String)> {
    let doc = doc("docs/http.md");
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
