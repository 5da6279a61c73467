//! The web workspace end to end: the pages as a browser with JavaScript off reads them (the
//! runs table, its filters and pages, a run with its steps, gates and the commands that decide
//! them, logs, artifacts and the evidence export), hostile values escaped, the headers every
//! page carries; then a real headless chromium against a daemon executing a run, following it
//! from running to succeeded without a reload, reading its logs and downloading its export,
//! which `stella evidence verify` accepts.

use std::time::Duration;

use crate::support::http::{base_of, get};
use crate::support::webdriver::{self, Browser, downloaded};
use crate::support::{Daemon, Repo, stella};

/// Prints hostile text, leaves an artifact, then fails or not as told.
const HOSTILE: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: hostile, version: 1.0.0 }\nspec:\n  steps:\n    - id: build\n      outputs: { report: report.txt }\n      run: { uses: builtin:shell, with: { script: \"echo '<script>alert(1)</script> & \\\"q\\\" <img src=x onerror=alert(2)>' | tee report.txt\" } }\n    - { id: deploy, run: { uses: builtin:shell, with: { script: \"echo '</pre><b>bold</b>' >&2; exit 4\" } } }\n";

const GATED: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: change-review, grants: [Packs.Approve], requiredCount: 2, expiresAfter: PT1H }\n  steps:\n    - { id: before, run: { uses: builtin:exec, with: { argv: [\"true\"] } } }\n    - id: fan\n      parallel:\n        steps:\n          - { id: left, run: { uses: builtin:exec, with: { argv: [echo, left] } } }\n          - { id: right, run: { uses: builtin:exec, with: { argv: [echo, right] } } }\n    - { id: review, gate: { approval: { id: change-review, message: \"<b>please</b> review & sign\" } } }\n    - { id: after, run: { uses: builtin:exec, with: { argv: [echo, done] } } }\n";

/// Prints `lines` lines half a second apart, then leaves an artifact.
fn slow(lines: u32) -> String {
    format!(
        "apiVersion: stella/v1\nkind: TaskPack\nmetadata: {{ name: slow, version: 1.0.0 }}\nspec:\n  steps:\n    - id: talk\n      run: {{ uses: builtin:shell, with: {{ script: \"for i in $(seq 1 {lines}); do echo line $i; sleep 0.5; done\" }} }}\n    - id: end\n      outputs: {{ note: note.txt }}\n      run: {{ uses: builtin:shell, with: {{ script: \"echo over > note.txt\" }} }}\n"
    )
}

fn serve(r: &Repo) -> Daemon {
    let mut cmd = stella();
    cmd.current_dir(r.path())
        .args(["serve", "--repo", ".", "--http", "127.0.0.1:0"]);
    Daemon::start(cmd)
}

/// Where `stella approve` writes run `id`'s approvals: beside its run directory's layout.
fn approvals_dir(r: &Repo, id: &str) -> String {
    let flat = r.path().join("runs").join(id).is_dir();
    let dir = stella_engine::layout::RunDir {
        id: id.to_string(),
        layout: if flat {
            stella_engine::layout::Layout::Flat
        } else {
            stella_engine::layout::Layout::Sharded
        },
    };
    dir.approvals()
}

/// No page may carry inline script, inline style or event handlers (the CSP forbids them).
fn assert_no_inline_code(html: &str) {
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..html[i..].find('>').map_or(html.len(), |e| i + e)];
        assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        assert!(
            html[i..].starts_with(&format!("{tag}></script>")),
            "a script with a body: {tag}"
        );
    }
    // Text holds no raw `<`, so every `<` opens a tag the server wrote.
    for tag in html.split('<').skip(1).map(|t| t.split('>').next().unwrap_or_default()) {
        assert!(!tag.contains(" style="), "an inline style: <{tag}>");
        let handler = tag.split_whitespace().any(|attr| {
            attr.starts_with("on")
                && attr.contains('=')
                && attr
                    .split('=')
                    .next()
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_lowercase()))
        });
        assert!(!handler, "an event handler: <{tag}>");
    }
}

#[test]
fn the_pages_read_without_javascript_and_escape_every_value() {
    let r = Repo::new();
    r.pack("hostile", HOSTILE).pack("gated", GATED);
    r.request("h1", "hostile", "{}\n").request("g1", "gated", "{}\n");
    let _ = r.daemon_once();
    let s = serve(&r);
    let base = base_of(&s);

    let runs = get(&base, "/");
    assert_eq!(runs.status, 200);
    assert_eq!(runs.content_type, "text/html; charset=utf-8");
    let html = runs.text();
    assert_no_inline_code(&html);
    for id in ["h1", "g1"] {
        assert!(
            html.contains("<tr class=\"run s-") && html.contains(&format!("data-id=\"{id}\"")),
            "{html}"
        );
    }
    assert!(html.contains("<span class=\"badge s-failed\">failed</span><span class=\"code\">ERR_STEP_FAILED</span>"));
    assert!(html.contains("<span class=\"badge s-waiting\">waiting</span>"));
    // The cards: nothing running, one waiting at its gate, nothing queued.
    assert!(
        html.contains("<div class=\"num\">1</div>\n    <div class=\"label\">waiting at a gate</div>"),
        "{html}"
    );

    // Filters are a GET form; what they name is the API's filter.
    let failed = get(&base, "/?state=failed&window=24h&pack=&code=ERR_STEP_FAILED").text();
    assert!(
        failed.contains("data-id=\"h1\"") && !failed.contains("data-id=\"g1\""),
        "{failed}"
    );
    assert!(failed.contains("<option value=\"failed\" selected>"));
    let none = get(&base, "/?pack=other").text();
    assert!(none.contains("No runs match.") && !none.contains("data-id=\"h1\""));
    // A filter value is echoed into the form, escaped.
    let echoed = get(&base, "/?pack=%22%3E%3Cscript%3Ealert(3)%3C/script%3E").text();
    assert!(!echoed.contains("<script>alert(3)"), "{echoed}");
    assert!(
        echoed.contains("value=\"&quot;&gt;&lt;script&gt;alert(3)&lt;&#x2f;script&gt;\""),
        "{echoed}"
    );
    let bad = get(&base, "/?state=sleeping");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("ERR_USAGE") && bad.text().contains("`state` must be one of"));
    assert_eq!(get(&base, "/?window=forever").status, 400);
    // Pages follow the API's cursor.
    let first = get(&base, "/api/v1/runs?limit=1").json();
    assert_eq!(first["runs"][0]["id"], "h1");
    let cursor = first["next"].as_str().unwrap();
    let second = get(&base, &format!("/?cursor={cursor}")).text();
    assert!(
        second.contains("data-id=\"g1\"") && !second.contains("data-id=\"h1\""),
        "{second}"
    );
    assert!(second.contains("« newest"));

    // A failed run: hostile output escaped in the log and the artifact listed with its digest.
    let run = get(&base, "/runs/h1");
    assert_eq!(run.status, 200);
    let page = run.text();
    assert_no_inline_code(&page);
    // Paths as a browser reads them (the templates escape `/` too).
    let plain = page.replace("&#x2f;", "/");
    assert!(!page.contains("<script>alert(1)") && !page.contains("<img src=x") && !page.contains("<b>bold</b>"));
    assert!(
        page.contains("[build] &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; &quot;q&quot;"),
        "{page}"
    );
    assert!(page.contains("stella runs retry h1") && page.contains("stella runs resume h1"));
    assert!(
        !page.contains("stella runs cancel h1"),
        "a finished run is not cancelled"
    );
    let artifact = get(&base, "/api/v1/runs/h1").json()["artifacts"][0].clone();
    assert!(plain.contains("<a href=\"/api/v1/runs/h1/artifacts/build/report\" download>report</a>"));
    assert!(page.contains(artifact["sha256"].as_str().unwrap()));
    // One step's log, by the form.
    let deploy = get(&base, "/runs/h1?step=deploy").text();
    assert!(
        deploy.contains("&lt;&#x2f;pre&gt;&lt;b&gt;bold&lt;&#x2f;b&gt;") && !deploy.contains("[build]"),
        "{deploy}"
    );
    assert!(deploy.contains("<option value=\"deploy\" selected>"));
    // The run ended, failed: its evidence export is offered with its digest and status.
    let export = get(&base, "/api/v1/runs/h1/export");
    assert_eq!(export.status, 200);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&export.body));
    assert!(page.contains(&digest), "the export's sha256 on the page");
    assert!(plain.contains("href=\"/api/v1/runs/h1/export\" download=\"h1.tar.gz\""));
    assert!(page.contains("stella evidence verify h1.tar.gz") && page.contains("verifies"));

    // A run waiting at its gate: the graph, the gate and the exact commands.
    let gated = get(&base, "/runs/g1").text();
    assert_no_inline_code(&gated);
    let gated = gated.replace("&#x2f;", "/");
    assert!(
        gated.contains("<span class=\"sid\">fan</span>") && gated.contains("2 succeeded"),
        "{gated}"
    );
    assert!(gated.contains("title=\"left: succeeded\"") && gated.contains("title=\"right: succeeded\""));
    assert!(gated.contains("Counted 0 of 2 required"));
    assert!(gated.contains("stella approve g1 --gate change-review --key ~/.ssh/id_ed25519"));
    let file = format!("{}/change-review/PRINCIPAL.yaml", approvals_dir(&r, "g1"));
    assert!(
        gated.contains(&format!(
            "ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n stella-approval {file}"
        )),
        "{gated}"
    );
    assert!(gated.contains("planHash: &quot;sha256:"));
    assert!(gated.contains("stella runs cancel g1"));
    // The gate's message, hostile, in the log.
    assert!(
        gated.contains("-- gate.waiting: &lt;b&gt;please&lt;/b&gt; review &amp; sign"),
        "{gated}"
    );
    assert!(gated.contains("data-final=\"0\""));
    // An approval that does not count is listed with its file, code and reason.
    let plan_hash = get(&base, "/api/v1/runs/g1").json()["planHash"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = stella_engine::approvals::Approval {
        run: "g1".into(),
        gate: "change-review".into(),
        plan_hash,
        decision: stella_engine::approvals::Decision::Approve,
        comment: Some("</td><script>alert(4)</script>".into()),
    };
    let at = format!("{}/change-review/mallory.yaml", approvals_dir(&r, "g1"));
    r.write(&at, &forged.render())
        .write(
            &format!("{at}.sig"),
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        )
        .commit_all("mallory approves");
    let _ = r.daemon_once();
    let ignored = get(&base, "/runs/g1").text();
    assert_no_inline_code(&ignored);
    let ignored = ignored.replace("&#x2f;", "/");
    assert!(
        ignored.contains(&format!("<td class=\"mono\">{at}</td><td class=\"code\">ERR_APPROVAL_")),
        "{ignored}"
    );
    assert!(ignored.contains("Counted 0 of 2 required"));

    // Headers, errors, assets, and nothing that writes.
    let missing = get(&base, "/runs/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("ERR_RUN_NOT_FOUND"));
    assert_eq!(get(&base, "/runs/..%2F..%2Fetc").status, 400);
    let js = get(&base, "/assets/workspace.js");
    assert_eq!(
        (js.status, js.content_type.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert_eq!(
        get(&base, "/assets/workspace.css").content_type,
        "text/css; charset=utf-8"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let page = agent.get(format!("{base}/")).call().unwrap();
    let h = page.headers();
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'") && !csp.contains("unsafe"));
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    for path in ["/", "/runs/g1"] {
        let posted = agent.post(format!("{base}{path}")).send("x").unwrap();
        assert_eq!(posted.status().as_u16(), 405, "POST {path}");
    }
}

/// Whether the browser tests can run: skipped without chromium, but never in CI.
fn browser_here() -> bool {
    match webdriver::available() {
        Ok(()) => true,
        Err(missing) => {
            assert!(std::env::var_os("CI").is_none(), "CI needs the browser: {missing}");
            eprintln!("skipped: {missing}");
            false
        }
    }
}

#[test]
fn a_browser_follows_a_run_to_its_end_reads_its_logs_and_downloads_evidence_that_verifies() {
    if !browser_here() {
        return;
    }
    let r = Repo::new();
    r.pack("slow", &slow(8));
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let downloads = tempfile::tempdir().unwrap();
    let b = Browser::start(downloads.path());

    // The runs table, open before the run exists: the row arrives and changes by itself.
    b.open(&format!("{base}/"));
    b.wait(
        "the stream",
        Duration::from_secs(20),
        "return document.getElementById('live').textContent === 'live'",
    );
    b.eval("window.stellaMark = 'no reload'; return true");
    r.request("r1", "slow", "{}\n");
    let row = "var b = document.querySelector('tr[data-id=\"r1\"] .badge'); return b && b.textContent";
    b.wait(
        "r1 running in the table",
        Duration::from_secs(30),
        &format!("{row} === 'running'"),
    );
    b.wait(
        "r1 succeeded in the table",
        Duration::from_secs(30),
        &format!("{row} === 'succeeded'"),
    );
    assert_eq!(b.eval("return window.stellaMark"), "no reload");
    assert_eq!(
        b.eval("return document.querySelector('tr[data-id=\"r1\"] .count').textContent"),
        "2/2"
    );

    // A second run, followed on its own page from the start: logs and steps live.
    r.request("r2", "slow", "{}\n");
    b.wait(
        "r2 in the table",
        Duration::from_secs(30),
        "return document.querySelector('tr[data-id=\"r2\"] a')",
    );
    b.click("tr[data-id=\"r2\"] a");
    b.wait(
        "the run page",
        Duration::from_secs(20),
        "return document.body.getAttribute('data-run') === 'r2'",
    );
    b.eval("window.stellaMark = 'no reload'; return true");
    let state = "return document.querySelector('#summary .badge').textContent";
    b.wait(
        "a live log line while r2 runs",
        Duration::from_secs(30),
        "var l = document.getElementById('log').textContent; return /\\[talk\\] line [2-6]\\b/.test(l) && !/line 8/.test(l)",
    );
    assert_ne!(b.eval(state), "succeeded", "the log was seen live, before the end");
    b.wait(
        "r2 succeeded on its page",
        Duration::from_secs(30),
        &format!("{state} === 'succeeded'"),
    );
    b.wait(
        "the whole log",
        Duration::from_secs(10),
        "return /\\[talk\\] line 8\\n-- run.succeeded/.test(document.getElementById('log').textContent)",
    );
    let log = b.eval("return document.getElementById('log').textContent");
    assert_eq!(
        log.as_str().unwrap().matches("[talk] line 3\n").count(),
        1,
        "no line twice: {log}"
    );
    b.wait(
        "the artifact and the export appear",
        Duration::from_secs(10),
        "return document.getElementById('export') && document.querySelector('#artifacts a')",
    );
    assert_eq!(b.eval("return window.stellaMark"), "no reload");
    assert_eq!(
        b.eval("return document.querySelectorAll('#graph .node.s-succeeded').length"),
        2
    );

    // One step's logs, by the form.
    b.open(&format!("{base}/runs/r2?step=talk"));
    assert_eq!(
        b.eval("return document.getElementById('log').textContent.split('\\n')[0]"),
        "line 1"
    );

    // The export, downloaded by the browser, verifies offline.
    b.click("#export");
    let file = downloaded(downloads.path(), "r2.tar.gz", Duration::from_secs(30));
    let cli = r.outside("cli-r2.tar.gz");
    r.stella(&["runs", "export", "r2", "-o", cli.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&cli).unwrap(),
        "byte-identical to the CLI's"
    );
    r.stella(&["evidence", "verify", file.to_str().unwrap()]).ok();

    // 90 s without an event or a heartbeat: the banner says so and the stream is opened again.
    b.open(&format!("{base}/"));
    b.wait(
        "the stream",
        Duration::from_secs(20),
        "return document.getElementById('live').textContent === 'live'",
    );
    b.eval(
        "window.stellaSeen = []; var banner = document.getElementById('banner');
         new MutationObserver(function () { if (!banner.hidden) window.stellaSeen.push(banner.textContent); })
           .observe(banner, { attributes: true, childList: true, characterData: true, subtree: true });
         var now = Date.now; Date.now = function () { return now() + 100000; }; return true",
    );
    b.wait(
        "the stale banner",
        Duration::from_secs(20),
        "return window.stellaSeen.some(function (t) { return /No event or heartbeat for \\d+ s/.test(t); })",
    );
    b.wait(
        "the stream again",
        Duration::from_secs(20),
        "return document.getElementById('live').textContent === 'live' && document.getElementById('banner').hidden",
    );
}

#[test]
fn without_streams_the_browser_polls_the_api_and_still_follows_a_run() {
    if !browser_here() {
        return;
    }
    let r = Repo::new();
    r.pack("slow", &slow(6));
    let d = r.daemon(&["--repo", ".", "--http", "127.0.0.1:0"]);
    let base = base_of(&d);
    let downloads = tempfile::tempdir().unwrap();
    let b = Browser::start(downloads.path());
    // A browser whose fetch cannot read a body as it comes.
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({ "source": "delete window.ReadableStream;" }),
    );
    r.request("p1", "slow", "{}\n");
    b.open(&format!("{base}/runs/p1"));
    b.eval("window.stellaMark = 'no reload'; return true");
    assert_eq!(
        b.eval("return document.getElementById('live').textContent"),
        "polling every 5 s"
    );
    b.wait(
        "p1 succeeded, polled",
        Duration::from_secs(40),
        "return document.querySelector('#summary .badge').textContent === 'succeeded'",
    );
    b.wait(
        "its whole log, polled",
        Duration::from_secs(10),
        "return /\\[talk\\] line 6/.test(document.getElementById('log').textContent)",
    );
    assert_eq!(b.eval("return window.stellaMark"), "no reload");
    assert_eq!(b.eval("return document.getElementById('live').textContent"), "finished");
    // The table polls too.
    b.open(&format!("{base}/"));
    b.eval("window.stellaMark = 'no reload'; return true");
    r.request("p2", "slow", "{}\n");
    let row = "var b = document.querySelector('tr[data-id=\"p2\"] .badge'); return b && b.textContent";
    b.wait(
        "p2 in the table, polled",
        Duration::from_secs(40),
        &format!("{row} === 'succeeded'"),
    );
    assert_eq!(b.eval("return window.stellaMark"), "no reload");
    assert_eq!(
        b.eval("return document.querySelector('.card.c-running .num').textContent"),
        "0"
    );
}

#[test]
fn no_secret_a_step_prints_appears_on_any_page() {
    let secret = "s3cr3t-T0ken/value";
    let pack = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: s, version: 1.0.0 }\nspec:\n  secrets: [{ name: token, scope: registry }]\n  steps:\n    - id: use\n      outputs: { out: out.txt }\n      run: { uses: builtin:shell, with: { script: \"echo using $STELLA_SECRET_TOKEN; echo $STELLA_SECRET_TOKEN > out.txt; exit 2\" } }\n";
    let r = Repo::new();
    r.pack("s", pack).request("x1", "s", "{}\n");
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, format!("token: \"{secret}\"\n")).unwrap();
    let _ = r.stella(&[
        "daemon",
        "--once",
        "--repo",
        ".",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    let s = serve(&r);
    let base = base_of(&s);
    let run = get(&base, "/runs/x1").text();
    assert!(run.contains("using ***"), "the line is there, redacted: {run}");
    for path in ["/", "/?state=failed", "/runs/x1", "/runs/x1?step=use"] {
        let page = get(&base, path).text();
        // As written, and as the templates escape it.
        for form in [secret.to_string(), secret.replace('/', "&#x2f;")] {
            assert!(!page.contains(&form), "{path} shows the secret");
        }
    }
}
