//! A real browser for the console's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver) on a free port of 127.0.0.1. The driver process is stopped
//! by its PID when dropped.
//!
//! A missing `chromedriver` fails the test, naming the packages to install; only
//! `ANNAL_SKIP_BROWSER_TESTS=1` (for a machine without them, never set in CI) skips it.

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running chromedriver.
pub struct Driver {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether browser tests were asked to be skipped on this machine.
pub fn skipped() -> bool {
    std::env::var_os("ANNAL_SKIP_BROWSER_TESTS").is_some_and(|v| v == "1")
}

/// Starts chromedriver and waits until it answers.
pub fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start chromedriver ({e}): install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver; .ci/run does), or set \
                 ANNAL_SKIP_BROWSER_TESTS=1 on a machine that cannot run them"
            )
        });
    let driver = Driver { child, port };
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ready, "chromedriver did not start listening");
    driver
}

/// A headless chromium session of `width`×`height`.
pub async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"), "--hide-scrollbars",
                     "--force-device-scale-factor=1"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

/// Runs `body` (a test's steps in `client`'s browser), then ends the browser session
/// whether or not the steps panicked, so that no chromium outlives its test; then
/// passes the panic on.
pub async fn closing<T>(client: Client, body: impl std::future::Future<Output = T>) -> T {
    use futures_util::FutureExt as _;
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    let _ = client.close().await;
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The page as a user drives it: waits for what it shows, clicks (counted, for the
/// aim's "at most 5 clicks"), types, and saves screenshots.
pub struct Page {
    /// The session.
    pub client: Client,
    /// Clicks since the last [`Page::clicks`] call.
    clicks: u32,
}

impl Page {
    /// Wraps a session.
    pub fn new(client: Client) -> Self {
        Self { client, clicks: 0 }
    }

    /// The clicks made since the last call, resetting the count.
    pub fn clicks(&mut self) -> u32 {
        std::mem::take(&mut self.clicks)
    }

    /// Waits up to 15 s until the element `css` shows text containing `needle`; its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css} never showed '{needle}'; it showed:\n{last}");
    }

    /// Submits the filters form and answers the text of the results table once it shows
    /// `needle`: a table the page rendered after the submit, never the one shown before
    /// it (the console renders the new results asynchronously, so the old table can
    /// still be on the page, showing `needle` too).
    pub async fn search(&mut self, needle: &str) -> String {
        self.eval("document.querySelectorAll('table.events').forEach(t => t.dataset.stale = '1')")
            .await;
        self.click("form.filters button[type=submit]").await;
        self.wait_text("table.events:not([data-stale])", needle)
            .await
    }

    /// The text of the element `css` (waiting up to 15 s for it to exist).
    pub async fn text(&self, css: &str) -> String {
        self.wait_text(css, "").await
    }

    /// Clicks the element `css` (waiting for it), counting the click.
    pub async fn click(&mut self, css: &str) {
        self.click_on(Locator::Css(css), css).await;
    }

    /// Clicks the link whose text is exactly `text`, counting the click.
    pub async fn click_link(&mut self, text: &str) {
        self.click_on(Locator::LinkText(text), &format!("link '{text}'"))
            .await;
    }

    /// Clicks what `locator` finds (waiting up to 15 s for it), counting the click.
    async fn click_on(&mut self, locator: Locator<'_>, what: &str) {
        let el = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("no {what} to click: {e}"));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("click {what}: {e}"));
        self.clicks += 1;
    }

    /// Types `keys` into the input `css` (not a click), replacing what it held.
    pub async fn fill(&self, css: &str, keys: &str) {
        let el = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to type into: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(keys).await.expect("type");
    }

    /// Saves a screenshot as `docs/console/NAME.png` in the repository.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
        std::fs::create_dir_all(&dir).expect("docs/console");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("save the screenshot");
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }
}
