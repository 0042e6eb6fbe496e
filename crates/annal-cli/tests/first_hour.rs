//! What a newcomer meets first (issue 20): empty answers said on stderr with the store's
//! name and exit code 3, read-only commands that never create a store, a reader that
//! goes away ending the command quietly, errors that name their fix, and a server start
//! that says who can reach it.

mod common;

use common::annal;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const ENROL: &str = r#"{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":"no_stream","user_id":"sarah","correlation_id":"enrollment_abc123","events":[{"event_type":"FamilyEnrolled","data":{"family_name":"Martinez Family"}}]}"#;

#[test]
fn read_only_commands_on_a_missing_store_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("nested/deeper/annal.db");
    let s = format!("sqlite:{}", missing.display());
    for args in [
        vec!["read"],
        vec!["read", "--aggregate", "family_123"],
        vec!["audit", "family_123"],
        vec!["correlated", "enrollment_abc123"],
        vec!["verify"],
        vec!["digest"],
        vec!["projections"],
    ] {
        let mut all = args.clone();
        all.extend(["--store", &s]);
        let out = annal(&all, "");
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("no store at") && err.contains("nested/deeper/annal.db"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("nested").exists(),
        "no folder was created by a read"
    );
}

#[test]
fn empty_answers_name_the_store_with_exit_code_3() {
    let dir = tempfile::tempdir().expect("dir");
    let s = format!("sqlite:{}", dir.path().join("annal.db").display());
    assert!(annal(&["append", "--store", &s], ENROL).status.success());
    for (args, says) in [
        (
            vec!["read", "--aggregate", "nobody"],
            "aggregate 'nobody' has no events in",
        ),
        (
            vec!["read", "--event-type", "PaymentReceived"],
            "no events match the filters in",
        ),
        (
            vec!["read", "--after-position", "1"],
            "no events match after position 1 in",
        ),
        (
            vec!["audit", "nobody"],
            "aggregate 'nobody' has no events in",
        ),
        (
            vec!["correlated", "nothing"],
            "no events with correlation_id 'nothing' in",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--store", &s]);
        let out = annal(&all, "");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(says) && err.contains(&s), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let found = annal(&["read", "--aggregate", "family_123", "--store", &s], "");
    assert!(found.status.success(), "{}", text(&found.stderr));
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let s = format!("sqlite:{}", dir.path().join("annal.db").display());
    // More than a pipe holds, so that the writer meets the closed pipe.
    let events: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{"event_type":"Noted","data":{{"i":{i},"pad":"{}"}}}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    let lines: Vec<String> = (0..4)
        .map(|n| {
            format!(
                r#"{{"aggregate_type":"Log","aggregate_id":"log-{n}","events":[{}]}}"#,
                events.join(",")
            )
        })
        .collect();
    // One line per run: a run's results are printed while its input is still being
    // written, and this helper reads them only at the end.
    for line in &lines {
        assert!(annal(&["append", "--store", &s], line).status.success());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["read", "--store", &s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start annal read");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first line");
    // The reader (`| head -1`) is gone once its end of the pipe is dropped.
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "nothing said: {err}");
}

#[test]
fn a_server_given_without_its_scheme_is_refused_with_the_fix() {
    let out = annal(&["read", "--server", "127.0.0.1:2213"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("http://127.0.0.1:2213"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_listens_on_a_host_name_and_says_anonymous_access_is_on() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", &format!("localhost:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start annal serve");
    let mut said = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let done = line.contains("anonymous access");
        said.push(line);
        if done {
            break;
        }
    }
    let live = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(live, "listening on 127.0.0.1:{port}: {said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains(&format!("on http://127.0.0.1:{port}"))),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("anonymous access is on: any program on this machine")),
        "{said:?}"
    );
}

#[test]
fn a_pretty_printed_request_is_answered_with_the_one_line_rule() {
    let dir = tempfile::tempdir().expect("dir");
    let s = format!("sqlite:{}", dir.path().join("annal.db").display());
    let pretty = "{\n  \"aggregate_type\": \"Family\",\n  \"aggregate_id\": \"family_123\",\n  \"events\": []\n}\n";
    let out = annal(&["append", "--store", &s], pretty);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("line 1") && err.contains("one line"), "{err}");
}

#[test]
fn each_command_shows_only_the_flags_it_takes() {
    let serve = text(&annal(&["serve", "--help"], "").stdout);
    let flags = |help: &str| -> Vec<String> {
        help.split_whitespace()
            .filter(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches([',', '.', ')']).to_owned())
            .collect()
    };
    for absent in ["--server", "--token", "--ca-cert"] {
        assert!(
            !flags(&serve).iter().any(|f| f == absent),
            "serve --help shows {absent}"
        );
    }
    assert!(
        serve.contains("--max-event-bytes"),
        "serve takes the limits"
    );
    for command in [
        "read",
        "verify",
        "audit",
        "correlated",
        "projections",
        "digest",
    ] {
        let help = text(&annal(&[command, "--help"], "").stdout);
        assert!(
            !help.contains("--max-event-bytes") && !help.contains("--max-batch-events"),
            "{command} --help shows the append limits"
        );
        assert!(help.contains("--store"), "{command} --help names --store");
    }
    let append = text(&annal(&["append", "--help"], "").stdout);
    assert!(append.contains("--max-event-bytes") && append.contains("--server"));
}

/// Runs `annal ARGS` with a terminal as its stdout (util-linux `script`), as a person
/// at a terminal would; what it printed.
fn at_a_terminal(args: &str, no_color: bool) -> String {
    let mut cmd = Command::new("script");
    cmd.args([
        "-qec",
        &format!("{} {args}", env!("CARGO_BIN_EXE_annal")),
        "/dev/null",
    ]);
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let out = cmd
        .output()
        .expect("script (util-linux) runs annal on a terminal");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn a_person_at_a_terminal_gets_lines_and_colour_and_a_pipe_gets_ndjson() {
    let dir = tempfile::tempdir().expect("dir");
    let s = format!("sqlite:{}", dir.path().join("annal.db").display());
    assert!(annal(&["append", "--store", &s], ENROL).status.success());
    let shown = at_a_terminal(&format!("read --store {s}"), false);
    assert!(
        shown.contains("#1") && shown.contains("family_123 v1") && shown.contains("FamilyEnrolled"),
        "{shown}"
    );
    assert!(!shown.contains(r#""position":1"#), "not NDJSON: {shown}");
    assert!(shown.contains('\u{1b}'), "coloured: {shown:?}");
    let plain = at_a_terminal(&format!("read --store {s}"), true);
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
    let json = at_a_terminal(&format!("read --json --store {s}"), false);
    assert!(json.contains(r#""position":1"#), "--json: {json}");
    let piped = annal(&["read", "--store", &s], "");
    assert!(text(&piped.stdout).starts_with(r#"{"position":1"#));
    assert!(!text(&piped.stdout).contains('\u{1b}'));
    let audit = at_a_terminal(&format!("audit family_123 --store {s}"), true);
    let header = audit.lines().nth(1).unwrap_or_default();
    assert!(
        header.starts_with("POS") && header.contains("RECORDED") && header.contains("DATE"),
        "{audit}"
    );
}
