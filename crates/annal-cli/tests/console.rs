//! The audit console in a real browser (Debian's chromium through chromedriver): the
//! seed's co-op story told into a fresh `annal serve`, then the seed's five audit
//! questions answered through the console alone, as an auditor would, in at most five
//! clicks each, with a screenshot of each answer saved into docs/console/ (which
//! docs/console.md shows). Then what a token limited to one type sees, the live tail,
//! a tampered store's failed verify, and time travel with the state `coop serve` (the
//! co-op's own server, run in-process) folds for a family.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Page;
use fantoccini::Locator;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const AUDITOR: &str = "auditor-secret-0123456789";
const OPS: &str = "ops-secret-0123456789abcdef";
const INVOICES: &str = "invoices-secret-0123456789";

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.json");
    let doc = serde_json::json!({"tokens": [
        {"name": "auditor", "token": AUDITOR, "role": "read"},
        {"name": "ops", "token": OPS, "role": "admin", "may_act_for": ["*"]},
        {"name": "invoices", "token": INVOICES, "role": "read", "aggregate_types": ["Invoice"]},
    ]});
    std::fs::write(&path, doc.to_string()).expect("tokens file");
    path
}

/// A key-encryption key file in `dir` (the story's families have personal data).
fn kek_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("annal-kek.hex");
    std::fs::write(&path, "5a".repeat(32)).expect("kek");
    path
}

/// Tells the co-op story into the served store over HTTP, as the ops token.
async fn tell_story(port: u16) {
    let store = annal::client::HttpStore::builder(&format!("http://127.0.0.1:{port}"))
        .token(OPS)
        .build()
        .expect("a client");
    annal_example_coop::story::tell(Arc::new(store), &mut std::io::sink())
        .await
        .expect("the story is told");
}

/// Appends one event as the ops token; the position it was written at.
async fn append(
    port: u16,
    aggregate: &str,
    kind: &str,
    event: &str,
    data: serde_json::Value,
) -> u64 {
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/streams/{aggregate}"))
        .bearer_auth(OPS)
        .json(
            &serde_json::json!({"aggregate_type": kind, "user_id": "billing-job",
            "events": [{"event_type": event, "data": data}]}),
        )
        .send()
        .await
        .expect("append");
    assert_eq!(res.status(), 201);
    let done: serde_json::Value = res.json().await.expect("an append result");
    done["last_position"].as_u64().expect("last_position")
}

async fn sign_in(page: &mut Page, port: u16, token: &str) {
    page.client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .expect("open the console");
    page.fill("#token", token).await;
    page.click("form.signin button[type=submit]").await;
    page.wait_text("#who", "(").await;
    page.clicks();
}

/// Where each answer starts: the overview, as a newcomer arrives.
async fn from_the_overview(page: &mut Page) {
    page.click_link("Overview").await;
    page.wait_text("h1", "Overview").await;
    page.clicks();
}

/// Checks the aim's bound on clicks and prints the path's cost (for the closing note).
fn note(question: &str, clicks: u32, took: Duration) {
    assert!(clicks <= 5, "{question}: {clicks} clicks");
    eprintln!(
        "{question}: {clicks} clicks, {} ms in the browser",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_answers_the_seeds_five_questions_in_the_console() {
    if browser::skipped() {
        eprintln!("skipped: ANNAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let tokens = tokens_file(dir.path());
    let data = dir.path().join("data");
    let tokens_arg = tokens.to_str().expect("utf-8");
    // The story's families have personal data: the server needs a key-encryption key.
    let kek = kek_file(dir.path());
    let served = common::serve_with_env(
        &[
            "--data",
            data.to_str().expect("utf-8"),
            "--tokens-file",
            tokens_arg,
        ],
        &[("ANNAL_KEK_FILE", kek.as_os_str())],
    );
    tell_story(served.port).await;
    let port = served.port;

    let driver = browser::driver();
    let mut page = Page::new(browser::browser(&driver, 1280, 900).await);
    browser::closing(
        page.client.clone(),
        answer_the_five_questions(&mut page, port),
    )
    .await;
}

async fn answer_the_five_questions(page: &mut Page, port: u16) {
    sign_in(page, port, AUDITOR).await;
    page.wait_text("#head", "").await;
    page.screenshot("overview").await;

    // 1. When did the Martinez family pay?
    from_the_overview(page).await;
    let t = Instant::now();
    page.click_link("Events").await;
    page.fill("input[name=event_type]", "FamilyEnrolled").await;
    page.search("Martinez Family").await;
    page.click_link("family_123").await;
    let timeline = page.wait_text("#timeline", "PaymentReceived").await;
    let payment = timeline
        .lines()
        .find(|l| l.contains("PaymentReceived"))
        .expect("a payment line");
    assert!(payment.contains("2024-09-15"), "{payment}");
    assert!(timeline.contains("amount=450"), "{timeline}");
    note(
        "when did the Martinez family pay",
        page.clicks(),
        t.elapsed(),
    );
    page.screenshot("q1-martinez-payments").await;

    // 2. Were they ever late? Their timeline has no overdue payment; the Chen family's has.
    from_the_overview(page).await;
    let t = Instant::now();
    page.click_link("Events").await;
    page.fill("input[name=event_type]", "PaymentOverdue").await;
    let overdue = page.search("family_456").await;
    assert!(!overdue.contains("family_123"), "{overdue}");
    let clicks = page.clicks();
    assert!(clicks <= 5, "{clicks} clicks");
    note("were they ever late", clicks, t.elapsed());
    page.screenshot("q2-overdue-payments").await;
    assert!(!timeline.contains("PaymentOverdue") && !timeline.contains("PaymentDue"));

    // 3. Who locked the Chen family out, and why?
    from_the_overview(page).await;
    let t = Instant::now();
    page.click_link("Events").await;
    page.fill("input[name=event_type]", "PortalAccessLocked")
        .await;
    page.search("family_456").await;
    page.click_link("PortalAccessLocked").await;
    let facts = page.wait_text("dl.facts", "caused by").await;
    assert!(
        facts.contains("portal-access"),
        "the trigger locked it: {facts}"
    );
    page.click("#cause a").await;
    let cause = page.wait_text("h1", "PaymentOverdue").await;
    let facts = page.wait_text("dl.facts", "billing-job").await;
    assert!(facts.contains("billing_run_2024_10"), "{cause}\n{facts}");
    page.screenshot("q3-why-locked-cause").await;
    page.click_link("billing_run_2024_10").await;
    page.wait_text("h1", "Correlation billing_run_2024_10")
        .await;
    // The heading is drawn before the events are read; the graph once they are.
    page.wait_text("#graph", "PortalAccessLocked").await;
    let nodes = page
        .eval("return [...document.querySelectorAll('#graph .node')].map(n => n.dataset.type)")
        .await;
    let edges = page
        .eval("return document.querySelectorAll('#graph .edge').length")
        .await;
    let nodes: Vec<String> = serde_json::from_value(nodes).expect("node types");
    for kind in ["PaymentDue", "PaymentOverdue", "PortalAccessLocked"] {
        assert!(nodes.iter().any(|n| n == kind), "{kind} in {nodes:?}");
    }
    assert!(
        edges.as_u64().is_some_and(|e| e >= 1),
        "the lock is drawn from its cause: {edges}"
    );
    let clicks = page.clicks();
    assert!(clicks <= 5, "{clicks} clicks");
    note(
        "who locked the Chen family out, and why",
        clicks,
        t.elapsed(),
    );
    page.screenshot("q3-why-locked-graph").await;

    // 4. What did family 123 look like on 2024-09-20?
    from_the_overview(page).await;
    let t = Instant::now();
    page.click_link("Aggregate").await;
    page.fill("input[name=id]", "family_123").await;
    page.click("form.filters button[type=submit]").await;
    page.fill("#travel-date", "2024-09-20").await;
    page.click("#travel-go").await;
    let then = page
        .wait_text(
            "#travel-summary",
            "3 events: FamilyEnrolled, ChildAdded, PaymentReceived",
        )
        .await;
    assert!(!then.contains("Withdrawn"), "{then}");
    // annal serve has no state function for Family: the console says so.
    page.wait_text("#snapshot", "No state function is registered")
        .await;
    let clicks = page.clicks();
    assert!(clicks <= 5, "{clicks} clicks");
    note("family 123 on 2024-09-20", clicks, t.elapsed());
    page.screenshot("q4-family-123-on-2024-09-20").await;
    // The slider moves through the versions from the keyboard.
    page.client
        .find(Locator::Css("#travel"))
        .await
        .expect("slider")
        .send_keys("\u{E014}")
        .await
        .expect("arrow right");
    page.wait_text("#travel-summary", "4 events").await;

    // 5. Prove nothing was altered.
    from_the_overview(page).await;
    let t = Instant::now();
    page.click("#verify-now").await;
    let verified = page.wait_text("#verify-result", "passed").await;
    let head = page.text("#head").await;
    assert!(verified.contains(&format!("{head} events")), "{verified}");
    let clicks = page.clicks();
    assert!(clicks <= 5, "{clicks} clicks");
    note("prove nothing was altered", clicks, t.elapsed());
    page.screenshot("q5-verified").await;

    // The event detail: the stored bytes one click away.
    page.client
        .goto(&format!(
            "http://127.0.0.1:{port}/console/#/events?event_type=PaymentReceived"
        ))
        .await
        .expect("goto");
    page.click_link("PaymentReceived").await;
    page.click("#raw-toggle").await;
    let raw = page.wait_text("#raw-data", "amount").await;
    assert!(raw.starts_with('{'), "{raw}");
    page.screenshot("event-raw").await;

    // Browse by aggregate id prefix: family_4… is the Chen family alone.
    page.client
        .goto(&format!("http://127.0.0.1:{port}/console/#/events"))
        .await
        .expect("goto");
    page.fill("input[name=aggregate_id_prefix]", "family_4")
        .await;
    let chen = page.search("family_456").await;
    assert!(!chen.contains("family_123"), "{chen}");
    page.screenshot("prefix-family-4").await;

    // The audit report: counts per type for one user, counted by the server.
    page.client
        .goto(&format!(
            "http://127.0.0.1:{port}/console/#/audit?user_id=sarah"
        ))
        .await
        .expect("goto");
    let counts = page.wait_text("#counts", "FamilyEnrolled").await;
    assert!(counts.contains("FamilyEnrolled 2"), "{counts}");
    page.screenshot("audit-sarah").await;
    // By principal: the ops token wrote the story (sarah's events among them); the
    // auditor's token wrote nothing.
    page.client
        .goto(&format!(
            "http://127.0.0.1:{port}/console/#/audit?user_id=sarah&principal=ops"
        ))
        .await
        .expect("goto");
    let counts = page.wait_text("#counts", "FamilyEnrolled").await;
    assert!(counts.contains("FamilyEnrolled 2"), "{counts}");
    page.client
        .goto(&format!(
            "http://127.0.0.1:{port}/console/#/audit?principal=auditor"
        ))
        .await
        .expect("goto");
    page.wait_text("#total", "0 events").await;

    // The live tail shows an event appended while it runs.
    page.client
        .goto(&format!("http://127.0.0.1:{port}/console/#/events"))
        .await
        .expect("goto");
    page.click("#tail-toggle").await;
    page.wait_text("#tail-status", "live").await;
    append(
        port,
        "family_789",
        "Family",
        "FamilyEnrolled",
        serde_json::json!({"family_name": "Okafor Family"}),
    )
    .await;
    page.wait_text("#tail-rows", "Okafor Family").await;
    page.screenshot("live-tail").await;

    // At phone width the overview and a timeline fit the screen.
    page.client.set_window_size(390, 844).await.expect("resize");
    for view in ["#/", "#/aggregate/family_123"] {
        page.client
            .goto(&format!("http://127.0.0.1:{port}/console/{view}"))
            .await
            .expect("goto");
        let (shown, name) = if view == "#/" {
            ("Head position", "phone-overview")
        } else {
            ("version", "phone-timeline")
        };
        page.wait_text("main", shown).await;
        page.screenshot(name).await;
        let overflow = page
            .eval("return document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{view} overflows by {overflow}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_one_type_sees_nothing_else_in_the_console() {
    if browser::skipped() {
        eprintln!("skipped: ANNAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let tokens = tokens_file(dir.path());
    let served = common::serve(
        &dir.path().join("data"),
        &["--tokens-file", tokens.to_str().expect("utf-8")],
    );
    let port = served.port;
    append(
        port,
        "family_123",
        "Family",
        "FamilyEnrolled",
        serde_json::json!({"family_name": "Martinez Family"}),
    )
    .await;
    let invoice = append(
        port,
        "invoice-1",
        "Invoice",
        "InvoiceIssued",
        serde_json::json!({"amount": 450}),
    )
    .await;
    append(
        port,
        "family_123",
        "Family",
        "PaymentReceived",
        serde_json::json!({"amount": 450}),
    )
    .await;

    let driver = browser::driver();
    let mut page = Page::new(browser::browser(&driver, 1280, 900).await);
    browser::closing(
        page.client.clone(),
        look_with_a_limited_token(&mut page, port, invoice),
    )
    .await;
}

/// `invoice`: the position of the only Invoice event.
async fn look_with_a_limited_token(page: &mut Page, port: u16, invoice: u64) {
    sign_in(page, port, INVOICES).await;
    let who = page.text("#who").await;
    assert!(who.contains("only Invoice"), "{who}");
    let overview = page
        .wait_text("main", "sees only aggregates of type Invoice")
        .await;
    assert!(!overview.contains("Verify now"), "{overview}");
    assert_eq!(
        page.text("#head").await,
        invoice.to_string(),
        "the last Invoice event, not the log's head"
    );

    page.click_link("Events").await;
    let events = page.wait_text("table.events", "InvoiceIssued").await;
    assert!(
        !events.contains("family_123") && !events.contains("Family"),
        "{events}"
    );
    page.screenshot("limited-token").await;

    for (view, shown) in [
        ("#/aggregate/family_123", "404 not_found"),
        ("#/events?aggregate_type=Family", "403 forbidden"),
        ("#/audit?user_id=billing-job", "InvoiceIssued"),
        ("#/correlation/anything", "No events"),
    ] {
        page.client
            .goto(&format!("http://127.0.0.1:{port}/console/{view}"))
            .await
            .expect("goto");
        let main = page.wait_text("main", shown).await;
        for hidden in ["Martinez", "PaymentReceived", "FamilyEnrolled"] {
            assert!(!main.contains(hidden), "{view} shows {hidden}: {main}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_store_shows_a_failed_verify_in_red() {
    if browser::skipped() {
        eprintln!("skipped: ANNAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let tokens = tokens_file(dir.path());
    let data = dir.path().join("data");
    let tokens_arg = tokens.to_str().expect("utf-8");
    let mut served = common::serve(&data, &["--tokens-file", tokens_arg]);
    for n in 0..5 {
        append(
            served.port,
            &format!("family_{n}"),
            "Family",
            "FamilyEnrolled",
            serde_json::json!({"n": n}),
        )
        .await;
    }
    assert!(
        served.terminate(Duration::from_secs(10)),
        "the server stops"
    );
    let conn = rusqlite::Connection::open(data.join("annal.db")).expect("open behind annal's back");
    conn.execute_batch("DROP TRIGGER IF EXISTS events_are_immutable")
        .expect("drop the guard");
    let edited = conn
        .execute(
            "UPDATE events SET data = '{\"n\":99}' WHERE position = 3",
            [],
        )
        .expect("edit");
    assert_eq!(edited, 1);
    drop(conn);
    let served = common::serve(&data, &["--tokens-file", tokens_arg]);

    let driver = browser::driver();
    let mut page = Page::new(browser::browser(&driver, 1280, 900).await);
    browser::closing(page.client.clone(), verify_in_red(&mut page, served.port)).await;
}

async fn verify_in_red(page: &mut Page, port: u16) {
    sign_in(page, port, OPS).await;
    page.click("#verify-now").await;
    let failed = page
        .wait_text("#verify-result", "FAILED at position 3")
        .await;
    assert!(failed.contains("2 events before it are intact"), "{failed}");
    let color = page
        .eval("return getComputedStyle(document.getElementById('verify-result')).color")
        .await;
    assert_eq!(color, "rgb(165, 14, 14)", "the failure is red");
    page.screenshot("verify-failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_shows_the_family_state_the_coops_own_server_knows() {
    if browser::skipped() {
        eprintln!("skipped: ANNAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    // `coop serve`, run in this process: the console and API with Family's state function.
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let kek = kek_file(dir.path());
    let args = annal_example_coop::serve::args(&[
        "--kek-file".to_owned(),
        kek.display().to_string(),
        "--data".to_owned(),
        dir.path().display().to_string(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
    ])
    .expect("arguments");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(annal_example_coop::serve::run(args, async {
        let _ = stopped.await;
    }));
    let store =
        annal::client::HttpStore::connect(&format!("http://127.0.0.1:{port}")).expect("a client");
    let store: Arc<dyn annal::Store> = Arc::new(store);
    let up = async {
        while store.head(&[]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("coop serve answers");
    annal_example_coop::story::tell(store, &mut std::io::sink())
        .await
        .expect("the story is told");

    let driver = browser::driver();
    let mut page = Page::new(browser::browser(&driver, 1280, 900).await);
    browser::closing(page.client.clone(), travel_with_state(&mut page, port)).await;
    let _ = stop.send(());
    server
        .await
        .expect("the server task")
        .expect("coop serve stops cleanly");
}

async fn travel_with_state(page: &mut Page, port: u16) {
    page.client
        .goto(&format!(
            "http://127.0.0.1:{port}/console/#/aggregate/family_123?at=2024-09-20"
        ))
        .await
        .expect("open the console");
    let changed = page.wait_text("#state-changed", "payments").await;
    assert!(changed.contains("payment_status"), "{changed}");
    let state = page.wait_text("#state-table", "Martinez Family").await;
    assert!(state.contains("\"enrolled\""), "{state}");
    assert!(state.contains("\"amount\":450"), "{state}");
    page.screenshot("time-travel-state").await;
    // One step on: the mistaken withdrawal, then its reversal.
    let slider = page
        .client
        .find(Locator::Css("#travel"))
        .await
        .expect("slider");
    slider.send_keys("\u{E014}").await.expect("arrow right");
    page.wait_text("#state-changed", "status").await;
    page.wait_text("#state-table", "\"withdrawn\"").await;
    slider.send_keys("\u{E014}").await.expect("arrow right");
    let back = page.wait_text("#state-table", "\"enrolled\"").await;
    assert!(back.contains("was \"withdrawn\""), "{back}");
    // The CSV export keeps an event's personal part and subjects, as their JSON text.
    let csv = page
        .eval(
            r#"return import('/console/browse.js').then((m) => m.csv([{
                 position: 7, event_type: 'ChildAdded',
                 raw: '{"position":7,"data":{"age_band":"7-9"},"metadata":{},"subjects":["family_123"],"personal":{"child_name": "Sofía"}}'
               }, {
                 position: 8, event_type: 'Noted',
                 raw: '{"position":8,"data":{"a":1},"metadata":{}}'
               }]));"#,
        )
        .await;
    let csv = csv.as_str().expect("text");
    let mut lines = csv.lines();
    let header = lines.next().expect("header");
    assert!(header.ends_with(",hash,subjects,personal"), "{header}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.ends_with(r#","[""family_123""]","{""child_name"": ""Sofía""}""#)),
        "{csv}"
    );
    assert!(
        lines.next().is_some_and(|l| l.ends_with(",,")),
        "an event without a personal part leaves both cells empty: {csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_persistent_subscriptions_and_the_servers_rate_history() {
    use kurrentdb::{
        AppendToStreamOptions, ClientSettings, EventData, GetPersistentSubscriptionInfoOptions,
        NakAction, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
        SubscribeToPersistentSubscriptionOptions,
    };
    if browser::skipped() {
        eprintln!("skipped: ANNAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let served = common::serve(&dir.path().join("data"), &[]);
    let port = served.port;
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{port}?tls=false")
        .parse()
        .expect("connection string");
    let client = kurrentdb::Client::new(settings).expect("a KurrentDB client");
    let events: Vec<EventData> = (0..3)
        .map(|n| EventData::json("Placed", &serde_json::json!({ "n": n })).expect("json"))
        .collect();
    client
        .append_to_stream("order-1", &AppendToStreamOptions::default(), events)
        .await
        .expect("append");
    client
        .create_persistent_subscription(
            "order-1",
            "billing",
            &PersistentSubscriptionOptions::default().start_from(kurrentdb::StreamPosition::Start),
        )
        .await
        .expect("create the group");
    let mut sub = client
        .subscribe_to_persistent_subscription(
            "order-1",
            "billing",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe");
    // The first acknowledged, the second parked, the third left in flight.
    let mut got = Vec::new();
    while got.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(20), sub.next_subscription_event())
            .await
            .expect("an event in time")
            .expect("the subscription runs");
        if let PersistentSubscriptionEvent::EventAppeared { event, .. } = next {
            got.push(event);
        }
    }
    sub.ack(&got[0]).await.expect("ack");
    sub.nack(&got[1], NakAction::Park, "cannot bill")
        .await
        .expect("park");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = client
            .get_persistent_subscription_info(
                "order-1",
                "billing",
                &GetPersistentSubscriptionInfoOptions::default(),
            )
            .await
            .expect("info");
        if info.stats.parked_message_count == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never parked: {:?}", info.stats);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server samples the head every 2 s from its start: history before any page.
    // Three samples make two rates, however the head moved between them (the page adds
    // a sample of its own only when the head moved since the last one).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let overview: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{port}/v1/overview"))
                .await
                .expect("overview")
                .json()
                .await
                .expect("json");
        let history = overview["head_history"].as_array().expect("head_history");
        if history.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no history of three samples: {overview}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let driver = browser::driver();
    let page = Page::new(browser::browser(&driver, 1280, 900).await);
    browser::closing(page.client.clone(), async {
        page.client
            .goto(&format!("http://127.0.0.1:{port}/console/#/"))
            .await
            .expect("open the console");
        let row = page.wait_text("#persistent-table", "billing").await;
        let row = row
            .lines()
            .find(|l| l.contains("billing"))
            .expect("the group's row")
            .to_owned();
        // source, group, status, consumers, checkpoint, lag, in flight, parked, strategy
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[..4], ["order-1", "billing", "live", "1"], "{row}");
        assert_eq!(cells[6..], ["1", "1", "RoundRobin"], "{row}");
        let parked_red = page
            .eval("return document.querySelector('#persistent-table tbody tr').className")
            .await;
        assert_eq!(parked_red, "bad", "a group with parked messages is highlighted");
        // The rate chart is drawn from the server's samples at once: several rates,
        // where the page's own sampling would have one after 2 s.
        let points = page
            .eval("return (document.querySelector('.chart polyline')?.getAttribute('points') ?? '').split(' ').filter(Boolean).length")
            .await;
        assert!(
            points.as_u64().is_some_and(|n| n >= 2),
            "the chart has the server's history: {points} points"
        );
        page.screenshot("persistent-subscriptions").await;
    })
    .await;
    drop(sub);
}
