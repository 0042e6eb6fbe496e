//! Long commands (verify, backup, copy, append from a file, projections --wait during
//! a rebuild) show progress on stderr when it is a terminal, dimmed unless NO_COLOR,
//! and wiped when done; into pipes and files they print none. The terminal is a pseudo-terminal from util-linux `script`.

mod common;

use std::path::Path;
use std::process::Command;

/// A store of 30 events in 3 appends; its URL.
fn seeded(dir: &Path) -> String {
    let store = format!("sqlite:{}", dir.join("s.db").display());
    let out = common::annal(&["append", "--store", &store], &requests());
    assert!(out.status.success(), "{out:?}");
    store
}

fn requests() -> String {
    (0..3)
        .map(|i| {
            let events: Vec<String> = (0..10)
                .map(|j| format!(r#"{{"event_type":"Tick","data":{{"n":{j}}}}}"#))
                .collect();
            format!(
                r#"{{"aggregate_type":"Clock","aggregate_id":"clock-{i}","events":[{}]}}"#,
                events.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `annal ARGS` wrote to its terminal (stdout and stderr both), run under a
/// pseudo-terminal in `dir`, and whether it succeeded; `shell_tail` is appended to the
/// command line (redirections).
fn run_on_a_terminal(dir: &Path, args: &str, shell_tail: &str, no_color: bool) -> (String, bool) {
    let line = format!("{} {args} {shell_tail}", env!("CARGO_BIN_EXE_annal"));
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .current_dir(dir)
        .env_remove("ANNAL_STORE")
        .env_remove("ANNAL_SERVER");
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let out = command
        .output()
        .expect("this test needs `script` (util-linux) for a pseudo-terminal");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// [`run_on_a_terminal`], which must succeed.
fn on_a_terminal(dir: &Path, args: &str, shell_tail: &str, no_color: bool) -> String {
    let (text, ok) = run_on_a_terminal(dir, args, shell_tail, no_color);
    assert!(ok, "annal {args}:\n{text}");
    text
}

/// The JSON report line in what `annal verify` printed.
fn report(printed: &str) -> String {
    printed
        .split(['\r', '\n'])
        .find(|l| l.starts_with(r#"{"ok":"#))
        .unwrap_or_else(|| panic!("no report in {printed:?}"))
        .to_owned()
}

/// Edits the data of the event at `position` behind the store's back.
fn tamper(db: &Path, position: u64) {
    let conn = rusqlite::Connection::open(db).expect("open behind the store's back");
    conn.execute_batch("DROP TRIGGER IF EXISTS events_are_immutable")
        .expect("drop guard");
    let n = conn
        .execute(
            "UPDATE events SET data = '{\"n\":-1}' WHERE position = ?1",
            [i64::try_from(position).expect("small")],
        )
        .expect("edit");
    assert_eq!(n, 1);
}

#[test]
fn long_commands_print_no_progress_into_pipes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = seeded(dir.path());
    let backup = dir.path().join("b.db");
    let copy = format!("sqlite:{}", dir.path().join("c.db").display());
    for args in [
        vec!["verify", "--store", &store],
        vec![
            "backup",
            "--store",
            &store,
            "--to",
            backup.to_str().expect("utf-8"),
        ],
        vec!["copy", "--from", &store, "--to", &copy],
        vec!["projections", "--wait", "--store", &store],
    ] {
        let out = common::annal(&args, "");
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?} wrote to a piped stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let imported = common::annal(&["append", "--store", &copy], "");
    assert!(imported.stderr.is_empty(), "{imported:?}");
}

#[test]
fn on_a_terminal_long_commands_show_progress_and_wipe_it() {
    let dir = tempfile::tempdir().expect("dir");
    let store = seeded(dir.path());
    std::fs::write(dir.path().join("in.ndjson"), requests()).expect("input");
    let fresh = format!("sqlite:{}", dir.path().join("f.db").display());
    let cases = [
        (
            format!("verify --store {store}"),
            String::new(),
            "verifying: 30 of 30 events (100%)",
        ),
        (
            format!("backup --store {store} --to b.db"),
            String::new(),
            "verifying the backup: 30 of 30 events (100%)",
        ),
        (
            format!("copy --from {store} --to sqlite:c.db"),
            String::new(),
            "copying: 30 of 30 events (100%)",
        ),
        (
            format!("append --store {fresh}"),
            "< in.ndjson > out.ndjson".to_owned(),
            "appending: 1 requests durable",
        ),
    ];
    for (args, tail, shows) in &cases {
        let seen = on_a_terminal(dir.path(), args, tail, false);
        assert!(
            seen.contains(shows),
            "annal {args}: no '{shows}' in {seen:?}"
        );
        assert!(seen.contains("\u{1b}[2m"), "dimmed on a terminal: {seen:?}");
        // Wiped: the last progress line is overwritten by spaces before the answer.
        let last = seen.rfind(shows).expect("shown");
        assert!(
            seen[last..].contains("\r     "),
            "annal {args}: the progress line is not wiped: {seen:?}"
        );
    }
    let plain = on_a_terminal(dir.path(), &format!("verify --store {store}"), "", true);
    assert!(plain.contains("verifying: 30 of 30 events"), "{plain:?}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: no escapes: {plain:?}");
}

#[test]
fn on_a_terminal_verify_checks_in_parts_and_reports_exactly_what_one_check_reports() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("big.db");
    let store = format!("sqlite:{}", db.display());
    // 17,000 events: more than one part (16,384).
    let requests: Vec<String> = (0..170)
        .map(|i| {
            let events: Vec<String> = (0..100)
                .map(|j| format!(r#"{{"event_type":"Tick","data":{{"n":{j}}}}}"#))
                .collect();
            format!(
                r#"{{"aggregate_type":"Clock","aggregate_id":"c{i}","events":[{}]}}"#,
                events.join(",")
            )
        })
        .collect();
    // From a file, the results to nowhere: through pipes, a child writing results
    // nobody reads yet while the test still writes its input would block both.
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, requests.join("\n")).expect("input");
    let appended = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["append", "--store", &store])
        .stdin(std::fs::File::open(&input).expect("input"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("annal append");
    assert!(appended.success());
    let intact = on_a_terminal(dir.path(), &format!("verify --store {store}"), "", true);
    assert_eq!(report(&intact), r#"{"ok":true,"checked":17000}"#);

    // Broken in the last part, then also in the first: the same report either way, the
    // parts before the break counted.
    for position in [16_500, 100] {
        tamper(&db, position);
        for quick in ["", " --quick"] {
            let args = format!("verify --store {store}{quick}");
            let piped = common::annal(&args.split(' ').collect::<Vec<_>>(), "");
            assert_eq!(piped.status.code(), Some(1), "{piped:?}");
            let (seen, ok) = run_on_a_terminal(dir.path(), &args, "", true);
            assert!(!ok, "a broken chain fails on a terminal too: {seen}");
            let piped = report(&String::from_utf8_lossy(&piped.stdout));
            assert_eq!(report(&seen), piped, "annal {args}");
            assert!(
                piped.contains(&format!(r#""checked":{}"#, position - 1)),
                "{piped}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn projections_wait_shows_a_rebuild_on_a_terminal_until_it_is_done() {
    use annal::checkpoint::{CheckpointStatus, CheckpointWrite};
    let dir = tempfile::tempdir().expect("dir");
    let url = seeded(dir.path());
    let store = annal::open(&url.parse().expect("url")).expect("open");
    let mut rebuilding = CheckpointWrite::new("payments".to_owned(), 10).expecting(None);
    rebuilding.status = CheckpointStatus::Rebuilding;
    store.put_checkpoint(rebuilding).await.expect("rebuilding");

    let watch_dir = dir.path().to_owned();
    let args = format!("projections --wait --store {url}");
    let watching =
        tokio::task::spawn_blocking(move || run_on_a_terminal(&watch_dir, &args, "", true));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !watching.is_finished(),
        "--wait returned during the rebuild"
    );
    let mut done = CheckpointWrite::new("payments".to_owned(), 30).expecting(Some(10));
    done.status = CheckpointStatus::Running;
    store.put_checkpoint(done).await.expect("rebuilt");
    let (seen, ok) = tokio::time::timeout(std::time::Duration::from_secs(30), watching)
        .await
        .expect("--wait returns once the rebuild is done")
        .expect("joined");
    assert!(ok, "{seen}");
    assert!(
        seen.contains("rebuilding payments: 10 of 30 events (33%)"),
        "{seen:?}"
    );
    let table = seen
        .rsplit('\r')
        .find(|l| l.contains("payments"))
        .unwrap_or_default();
    assert!(table.contains("running"), "then the list: {seen:?}");
}
