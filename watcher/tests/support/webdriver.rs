//! A headless Debian chromium driven through chromedriver's WebDriver protocol (plain JSON
//! over HTTP with ureq, so no new crate): start it, open a page, run a script in the page,
//! click, and let downloads land in a directory. Chromium runs with `--no-sandbox
//! --disable-gpu --disable-background-networking --disable-component-update`. When chromium
//! or chromedriver is missing, `Browser::start` says so: the caller skips, unless `CI` is set,
//! where a missing browser is a failure. Nothing here asserts a product behaviour.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Daemon;

/// The chromium and chromedriver CI installs (Debian's `chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session; dropping it ends the session and kills chromedriver (and with it
/// the browser).
pub struct Browser {
    base: String,
    session: String,
    _driver: Daemon,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn send(method: &str, url: &str, body: Option<&Value>) -> Value {
    let agent = agent();
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.unwrap_or(&json!({})).to_string()),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    assert!(
        resp.status().is_success(),
        "{method} {url} answered {}: {}",
        resp.status(),
        v["value"]["message"]
    );
    v["value"].clone()
}

/// Whether this machine has the browser; `Err` says what is missing.
pub fn available() -> Result<(), String> {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is missing (apt-get install chromium chromium-driver)"));
        }
    }
    Ok(())
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session whose downloads
    /// go to `downloads`.
    pub fn start(downloads: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let driver = Daemon::start(cmd);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = agent()
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start: {}",
                driver.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-dev-shm-usage", "--window-size=1280,1000"],
                "prefs": { "download.default_directory": downloads, "download.prompt_for_download": false },
            },
        } } });
        let created = send("POST", &format!("{base}/session"), Some(&caps));
        let session = created["sessionId"].as_str().expect("a session id").to_string();
        let b = Browser {
            base,
            session,
            _driver: driver,
        };
        b.cdp(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": downloads, "eventsEnabled": true }),
        );
        b
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/session/{}{rest}", self.base, self.session)
    }

    /// A DevTools protocol command, through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        send(
            "POST",
            &self.url("/goog/cdp/execute"),
            Some(&json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        send("POST", &self.url("/url"), Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        send(
            "POST",
            &self.url("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Clicks the first element matching a CSS selector.
    pub fn click(&self, selector: &str) {
        let found = send(
            "POST",
            &self.url("/element"),
            Some(&json!({ "using": "css selector", "value": selector })),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {selector}"))
            .to_string();
        send("POST", &self.url(&format!("/element/{id}/click")), Some(&json!({})));
    }

    /// Waits up to `within` for `script` to return something truthy; what it returned.
    pub fn wait(&self, what: &str, within: Duration, script: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.eval("return document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!(
                    "waited {within:?} for {what}, in vain; the page shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent().delete(self.url("")).call();
    }
}

/// The file a download left in `dir` once it is whole (no `.crdownload` beside it).
pub fn downloaded(dir: &Path, name: &str, within: Duration) -> PathBuf {
    let path = dir.join(name);
    let deadline = Instant::now() + within;
    while !path.exists() || dir.join(format!("{name}.crdownload")).exists() {
        assert!(
            Instant::now() < deadline,
            "no download {name} in {} within {within:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    path
}
