//! A real browser for the dashboard's tests: headless Chromium driven over WebDriver by a ChromeDriver that
//! each test starts and owns.
//!
//! [`Browser::start`] prints `skipped: chromedriver not found (install chromium and chromium-driver)` and
//! returns `None` when ChromeDriver is not installed, so `cargo test` works on a machine without Chromium;
//! `.ci/run` installs both and fails if that line shows up. Once ChromeDriver is there, any failure to start
//! the browser fails the test.

mod controls;
mod dashboard;
mod hostile;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::helpers::{eventually, Backend, TestApp, ADMIN_TOKEN};

/// How long a page gets to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(10);
/// How long ChromeDriver gets to answer `/status` after it was started.
const DRIVER_START: Duration = Duration::from_secs(15);
/// A free port can be taken by someone else between our probe and ChromeDriver's bind: try a few.
const DRIVER_ATTEMPTS: usize = 3;

/// Headless Chromium behind a ChromeDriver that this test started; both end when this is dropped.
pub struct Browser {
    pub client: Client,
    driver: Driver,
}

/// The ChromeDriver child in a process group of its own (Chromium joins it), plus Chromium's profile and
/// ChromeDriver's log in a temporary directory.
struct Driver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Driver {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    /// ChromeDriver's log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: ChromeDriver and the Chromium processes it started, even if the test panicked
        // before it could close the session.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chromedriver` on `PATH` (Debian's `chromium-driver` puts it in /usr/bin).
fn find_chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromedriver")).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// ChromeDriver has no `--port=0`: ask the kernel for a free port, release it, and hand it over.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start ChromeDriver on a free loopback port and wait until it says it is ready.
async fn start_driver(program: &Path) -> Driver {
    let http = reqwest::Client::new();
    let mut last_log = String::new();
    for _ in 0..DRIVER_ATTEMPTS {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = File::create(dir.path().join("chromedriver.log")).unwrap();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            // Debian's Chromium always starts crashpad, whose database follows XDG_CONFIG_HOME: keep it here.
            .env("XDG_CONFIG_HOME", dir.path())
            .env("XDG_CACHE_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver { child, port, dir };
        let status_url = format!("http://127.0.0.1:{port}/status");
        let ready = eventually(DRIVER_START, "chromedriver to answer /status or exit", || {
            let (http, status_url) = (&http, &status_url);
            let exited = driver.child.try_wait().ok().flatten().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                let response = http.get(status_url).send().await.ok()?;
                let status: serde_json::Value = response.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(true)
            }
        })
        .await;
        if ready {
            return driver;
        }
        last_log = driver.log_tail();
    }
    panic!("chromedriver did not start in {DRIVER_ATTEMPTS} attempts; its log:\n{last_log}");
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium session, or `None` (after the skip line) without ChromeDriver.
    pub async fn start() -> Option<Browser> {
        let Some(program) = find_chromedriver() else {
            eprintln!("skipped: chromedriver not found (install chromium and chromium-driver)");
            return None;
        };
        let driver = start_driver(&program).await;
        let profile = driver.dir.path().join("profile");
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            // A prompt no test expects fails the next command instead of being dismissed silently.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("no Chromium session: {e}; chromedriver's log:\n{}", driver.log_tail()));
        Some(Browser { client, driver })
    }

    /// End the WebDriver session (Chromium exits), then ChromeDriver.
    pub async fn close(self) {
        let Browser { client, driver } = self;
        let _ = client.close().await;
        drop(driver);
    }

    /// Open the dashboard of `app` and sign in with the admin token, as an operator would.
    pub async fn open_dashboard(&self, app: &TestApp) {
        self.client.goto(&format!("{}/ui/", app.addr)).await.expect("the dashboard loads");
        self.wait_for(Locator::Id("token"), "the token input").await.send_keys(ADMIN_TOKEN).await.unwrap();
        self.click(Locator::Id("save"), "the Use token button").await;
    }

    /// Go to one of the dashboard's pages (`overview`, `deliveries`, `routes`, `dead`) by its link, as a user would.
    pub async fn page(&self, name: &str) {
        self.click(Locator::Css(&format!(r#"nav a[data-page="{name}"]"#)), &format!("the {name} link")).await;
        let section = format!("page-{name}");
        eventually(PAGE_WAIT, &format!("the {name} page to show"), || async {
            let hidden = self.client.find(Locator::Id(&section)).await.ok()?.attr("hidden").await.ok()?;
            hidden.is_none().then_some(())
        })
        .await;
    }

    /// Resize the window (CSS pixels of the viewport's outer window; Chromium headless matches it).
    pub async fn window(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.expect("window resized");
    }

    /// A PNG of the window into `target/screenshots/<store>-<name>.png`; with `HOOKGATE_UPDATE_SCREENSHOTS=1`,
    /// the SQLite run's go into `docs/screenshots/<name>.png` as well (how the README's pictures are made).
    pub async fn screenshot(&self, backend: &Backend, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("target/screenshots").join(format!("{}-{name}.png", backend.name()))];
        if matches!(backend, Backend::Sqlite) && std::env::var("HOOKGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            files.push(root.join("docs/screenshots").join(format!("{name}.png")));
        }
        for file in files {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &png).unwrap();
        }
    }

    /// Run `script` in the page and return what it returns.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// The text of the element `locator` finds, once `check` accepts it.
    pub async fn text_when(&self, locator: Locator<'_>, what: &str, check: impl Fn(&str) -> bool) -> String {
        use futures_util::FutureExt;
        let last_seen = std::sync::Mutex::new(None::<String>);
        let found = eventually(PAGE_WAIT, what, || async {
            let text = self.client.find(locator).await.ok()?.text().await.ok()?;
            *last_seen.lock().unwrap() = Some(text.clone());
            check(&text).then_some(text)
        });
        match std::panic::AssertUnwindSafe(found).catch_unwind().await {
            Ok(text) => text,
            Err(_) => panic!("{what}: the element last read {:?}", last_seen.lock().unwrap()),
        }
    }

    /// The element `locator` finds, once the page shows it.
    pub async fn wait_for(&self, locator: Locator<'_>, what: &str) -> Element {
        eventually(PAGE_WAIT, what, || async { self.client.find(locator).await.ok() }).await
    }

    /// Click what `locator` finds, once it is there. The page redraws its lists while it is live, so an
    /// element found a moment ago may be gone: find it again and retry until the click lands.
    pub async fn click(&self, locator: Locator<'_>, what: &str) {
        eventually(PAGE_WAIT, &format!("to click {what}"), || async {
            let element = self.client.find(locator).await.ok()?;
            element.click().await.ok()
        })
        .await;
    }

    /// Answer the page's `window.prompt` with `text` and press OK; returns the prompt's question.
    pub async fn answer_prompt(&self, text: &str) -> String {
        let question = eventually(PAGE_WAIT, "a prompt", || async { self.client.get_alert_text().await.ok() }).await;
        self.client.send_alert_text(text).await.expect("typed into the prompt");
        self.client.accept_alert().await.expect("prompt accepted");
        question
    }

    /// The text of the row of table body `tbody` whose first cell is `name`, once the row satisfies
    /// `check` (the page updates after its API calls return).
    pub async fn row_text_when(&self, tbody: &str, name: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        use futures_util::FutureExt;
        let xpath = format!("//tbody[@id='{tbody}']/tr[td[1]='{name}']");
        let last_seen = std::sync::Mutex::new(None::<String>);
        let found = eventually(PAGE_WAIT, what, || async {
            let row = self.client.find(Locator::XPath(&xpath)).await.ok()?;
            let text = row.text().await.ok()?;
            *last_seen.lock().unwrap() = Some(text.clone());
            check(&text).then_some(text)
        });
        // On a timeout, say what the row did show: that is what a reader of the failure needs.
        match std::panic::AssertUnwindSafe(found).catch_unwind().await {
            Ok(text) => text,
            Err(_) => panic!("{what}: the row last read {:?}", last_seen.lock().unwrap()),
        }
    }
}
