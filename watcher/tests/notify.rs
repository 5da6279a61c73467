//! Notifications end to end: `notify:` targets in the config, the daemon delivering a run's
//! events to a real receiver on loopback (Python's http.server, every signature checked by
//! the `standardwebhooks` package), event filters with wildcards, CloudEvents and Slack
//! bodies, no secret in any body, a receiver down then up across a `kill -9` of the daemon,
//! `notify.failed` after the (test-shortened) horizon with the ledger still verifying, the
//! metrics and the API, and `stella notify test`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::http::{base_of, get};
use crate::support::{HELLO, Repo, wait_for};

/// The signing key of every test target.
const KEY: &str = "whsec_c3RlbGxhLW5vdGlmeS10ZXN0LWtleS0xMjM0NTY3OA==";
const SECRET_PACK: &str = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: leaky, version: 1.0.0 }\nspec:\n  secrets: [{ name: token }]\n  steps:\n    - id: leak\n      run: { uses: builtin:shell, with: { script: \"echo the token is $STELLA_SECRET_TOKEN; echo $STELLA_SECRET_TOKEN >&2; exit 3\" } }\n";
const TOKEN: &str = "tok-9f8e7d6c5b4a";

/// The Python with `standardwebhooks` (`bash test.sh` prepares it; see evidence.rs).
fn python() -> PathBuf {
    match std::env::var_os("STELLA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "STELLA_PYTHON is not set: the webhook signatures are checked with the PyPI package standardwebhooks; run `bash test.sh`, or prepare target/ci-venv as it does"
        ),
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The receiver, killed on drop.
struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    fn start(port: u16, log: &Path, status: u16) -> Receiver {
        Receiver::start_with(port, log, status, "http")
    }

    /// `scheme` "tls": HTTPS with a self-signed certificate, written to `<log>.cert.pem`.
    fn start_with(port: u16, log: &Path, status: u16, scheme: &str) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let mut child = Command::new(python())
            .args([
                script.to_str().unwrap(),
                &port.to_string(),
                KEY,
                log.to_str().unwrap(),
                &status.to_string(),
                scheme,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the receiver did not start");
        Receiver {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Every delivery so far.
    fn got(&self) -> Vec<Value> {
        got(&self.log)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn got(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A repository whose config (committed before any request, so the trust commit's) has
/// `targets`.
fn repo_with(targets: &str) -> Repo {
    let r = Repo::new();
    r.write(
        ".stella/config.yaml",
        &format!("branch: main\ncommit: {{ batchMs: 2000 }}\nnotify:\n{targets}"),
    );
    r.commit_all("notify targets");
    r
}

fn ops_target(port: u16, events: &str) -> String {
    format!("  - id: ops\n    url: http://127.0.0.1:{port}/ops\n    events: {events}\n    secret: OPS_KEY\n")
}

/// The ids the filter `keep` selects from run `id`'s events, as `<run>.<seq>.<target>`.
fn expected_ids(r: &Repo, id: &str, target: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    r.events(id)
        .iter()
        .filter(|e| keep(e["type"].as_str().unwrap()))
        .map(|e| format!("{id}.{}.{target}", e["seq"]))
        .collect()
}

fn pending(r: &Repo, target: &str) -> usize {
    std::fs::read_dir(r.path().join(".git/stella/outbox/pending").join(target))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn deliveries_are_signed_filtered_and_never_carry_a_secret() {
    let (port, chat_port) = (free_port(), free_port());
    let chat_url = format!("http://127.0.0.1:{chat_port}/chat/T0K3N-IN-URL");
    let r = repo_with(&format!(
        "{}  - id: chat\n    urlSecret: CHAT_URL\n    events: [run.failed]\n    format: slack\n    secret: OPS_KEY\n",
        ops_target(port, "[\"run.*\", step.failed]")
    ));
    r.pack("hello", HELLO).pack("leaky", SECRET_PACK);
    r.request("r1", "hello", "{}\n").request("f1", "leaky", "{}\n");
    let ops = Receiver::start(port, &r.outside("ops.ndjson"), 204);
    let chat = Receiver::start(chat_port, &r.outside("chat.ndjson"), 200);
    let out = r
        .daemon_command(&["--once", "--repo", ".", "--http", "127.0.0.1:0"])
        .env("STELLA_SECRET_OPS_KEY", KEY)
        .env("STELLA_SECRET_CHAT_URL", &chat_url)
        .env("STELLA_SECRET_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        (r.state("r1"), r.state("f1")),
        ("succeeded".to_string(), "failed".to_string())
    );

    let all = ops.got();
    for d in all.iter().chain(chat.got().iter()) {
        assert_eq!(d["verified"], true, "a Standard Webhooks verifier refused {d:#}");
        let body = d["body"].as_str().unwrap();
        assert!(
            !body.contains(TOKEN) && !body.contains("T0K3N-IN-URL"),
            "a secret in {body}"
        );
    }
    let ids: BTreeSet<String> = all.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    let mut want = expected_ids(&r, "r1", "ops", |t| t.starts_with("run.") || t == "step.failed");
    want.extend(expected_ids(&r, "f1", "ops", |t| {
        t.starts_with("run.") || t == "step.failed"
    }));
    assert_eq!(ids, want, "each wanted event once, nothing else");
    assert!(ids.iter().any(|i| i.starts_with("f1.")) && want.len() >= 4);
    let ce: Value = serde_json::from_str(all[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(all[0]["contentType"], "application/cloudevents+json");
    assert_eq!(
        (ce["specversion"].as_str(), ce["id"].as_str()),
        (Some("1.0"), all[0]["id"].as_str())
    );
    assert!(
        ce["type"].as_str().unwrap().starts_with("dev.stella.run.") && ce["time"].is_string(),
        "{ce:#}"
    );

    let chat = chat.got();
    assert_eq!(chat.len(), 1, "only f1's run.failed: {chat:#?}");
    assert_eq!(chat[0]["path"], "/chat/T0K3N-IN-URL");
    let text: Value = serde_json::from_str(chat[0]["body"].as_str().unwrap()).unwrap();
    assert!(
        text["text"].as_str().unwrap().starts_with("Stella run f1 failed"),
        "{text:#}"
    );
    assert_eq!(pending(&r, "ops") + pending(&r, "chat"), 0);
    r.stella(&["ledger", "verify"]).ok();
}

#[test]
fn a_waiting_gate_says_what_it_needs_and_how_to_approve() {
    let port = free_port();
    let r = repo_with(&ops_target(port, "[gate.waiting]"));
    r.write(".stella/approvers.yaml", "grants:\n  release: [alice]\n");
    r.commit_all("approvers");
    let gated = "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: gated, version: 1.0.0 }\nspec:\n  approvals:\n    - { id: ship, grants: [release], requiredCount: 1 }\n  steps:\n    - { id: ok, gate: { approval: { id: ship } } }\n";
    r.pack("gated", gated).request("g1", "gated", "{}\n");
    let rx = Receiver::start(port, &r.outside("ops.ndjson"), 204);
    let out = r
        .daemon_command(&["--once", "--repo", "."])
        .env("STELLA_SECRET_OPS_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rx.got();
    assert_eq!(got.len(), 1, "{got:#?} {:#?}", r.events("g1"));
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    let gate = &body["data"]["gate"];
    assert_eq!(gate["gate"], "ship", "{body:#}");
    assert_eq!(
        gate["approvals"],
        serde_json::json!({ "count": 1, "roles": ["release"] })
    );
    assert_eq!(gate["approve"], "stella approve g1 --gate ship --key KEY");
}

#[test]
fn a_receiver_down_then_up_across_a_kill_9_gets_every_notification() {
    let port = free_port();
    let r = repo_with(&ops_target(port, "[\"*\"]"));
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    let mut cmd = r.daemon_command(&["--repo", ".", "--poll", "1s"]);
    cmd.env("STELLA_SECRET_OPS_KEY", KEY);
    let d = crate::support::Daemon::start(cmd);
    wait_for("r1 to succeed", Duration::from_secs(60), || {
        r.at_head(&format!("{}/plan.json", r.run_dir("r1"))).is_some() && r.state("r1") == "succeeded"
    });
    // Every event but the log lines is waiting, some tried already (nothing listens).
    let want = expected_ids(&r, "r1", "ops", |t| t != "step.log");
    wait_for("every notification queued", Duration::from_secs(20), || {
        pending(&r, "ops") == want.len()
    });
    d.kill();
    // As if the runner had died between journaling the later events and queueing them: their
    // entries gone, the run's mark left behind them. The next start finds them again.
    let outbox = r.path().join(".git/stella/outbox");
    let seqs: Vec<u64> = want
        .iter()
        .map(|id| id.split('.').nth(1).unwrap().parse().unwrap())
        .collect();
    let keep_up_to = seqs.iter().copied().min().unwrap() + 1;
    for id in &want {
        let seq: u64 = id.split('.').nth(1).unwrap().parse().unwrap();
        if seq > keep_up_to {
            std::fs::remove_file(outbox.join(format!("pending/ops/{id}.json"))).unwrap();
        }
    }
    std::fs::write(outbox.join("marks/r1"), format!("{keep_up_to}\n")).unwrap();
    let rx = Receiver::start(port, &r.outside("ops.ndjson"), 204);
    let mut cmd = r.daemon_command(&["--repo", ".", "--poll", "1s"]);
    cmd.env("STELLA_SECRET_OPS_KEY", KEY);
    let _d = crate::support::Daemon::start(cmd);
    wait_for("every notification delivered", Duration::from_secs(30), || {
        rx.got()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
            == want
    });
    assert!(rx.got().iter().all(|g| g["verified"] == true));
    wait_for("the outbox emptied", Duration::from_secs(10), || {
        pending(&r, "ops") == 0
    });
}

#[test]
fn a_notification_never_delivered_is_recorded_as_notify_failed_and_the_ledger_verifies() {
    let port = free_port();
    let r = repo_with(&ops_target(port, "[run.succeeded]"));
    r.pack("hello", HELLO).request("r1", "hello", "{}\n");
    let mut cmd = r.daemon_command(&["--repo", ".", "--poll", "1s", "--http", "127.0.0.1:0"]);
    cmd.env("STELLA_SECRET_OPS_KEY", KEY)
        .env("STELLA_NOTIFY_HORIZON_MS", "2500");
    let d = crate::support::Daemon::start(cmd);
    wait_for("notify.failed in r1's events", Duration::from_secs(60), || {
        r.at_head(&format!("{}/plan.json", r.run_dir("r1"))).is_some()
            && r.events("r1").iter().any(|e| e["type"] == "notify.failed")
    });
    let events = r.events("r1");
    let failed = events.iter().find(|e| e["type"] == "notify.failed").unwrap();
    let succeeded = events.iter().find(|e| e["type"] == "run.succeeded").unwrap();
    assert_eq!(failed["data"]["webhookId"], format!("r1.{}.ops", succeeded["seq"]));
    assert_eq!(failed["data"]["code"], "ERR_NOTIFY_FAILED");
    assert!(failed["data"]["attempts"].as_u64().unwrap() >= 1);
    assert!(!failed.to_string().contains(&format!(":{port}")), "no URL in {failed}");
    let base = base_of(&d);
    let metrics = get(&base, "/metrics").text();
    assert!(
        metrics.contains("pack_notify_deliveries_total{target=\"ops\",outcome=\"failed\"} 1"),
        "{metrics}"
    );
    let state = get(&base, "/api/v1/notifications").json();
    let ops = &state["targets"][0];
    assert_eq!(
        (ops["id"].as_str(), ops["failed"].as_u64(), ops["pending"].as_u64()),
        (Some("ops"), Some(1), Some(0)),
        "{state:#}"
    );
    assert!(ops["lastError"].as_str().unwrap().contains("could not be reached"));
    assert!(
        get(&base, "/").text().contains("card c-notify"),
        "the workspace has the notification card"
    );
    r.stella(&["ledger", "verify"]).ok();
    let evidence = r.stella(&["evidence", "verify", "r1"]);
    assert_eq!(evidence.code(), Some(0), "{}{}", evidence.stdout(), evidence.stderr());
    assert_eq!(r.state("r1"), "succeeded");
}

#[test]
fn notify_test_prints_the_receivers_status_and_fails_when_refused() {
    let port = free_port();
    let r = repo_with(&ops_target(port, "[\"run.*\"]"));
    let test = |secret: bool| {
        let mut c = crate::support::stella();
        c.current_dir(r.path()).args(["notify", "test", "ops"]);
        if secret {
            c.env("STELLA_SECRET_OPS_KEY", KEY);
        }
        c.output().unwrap()
    };
    let down = test(true);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("error[ERR_NOTIFY_FAILED]"));
    {
        let rx = Receiver::start(port, &r.outside("ok.ndjson"), 202);
        let ok = test(true);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        assert!(String::from_utf8_lossy(&ok.stdout).contains("answered HTTP 202"));
        let got = rx.got();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["verified"], true);
        let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "dev.stella.notify.test");
        let no_key = test(false);
        assert_eq!(no_key.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&no_key.stderr).contains("STELLA_SECRET_OPS_KEY"));
    }
    let _refusing = Receiver::start(port, &r.outside("no.ndjson"), 403);
    let refused = test(true);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("answered HTTP 403"));
    let unknown = r.stella(&["notify", "test", "opz"]);
    assert_eq!(unknown.code(), Some(2));
    assert!(unknown.stderr().contains("did you mean `ops`?"), "{}", unknown.stderr());
}

#[test]
fn a_malformed_target_is_located() {
    let r = repo_with("  - id: ops\n    url: ftp://nowhere\n    events: [run.*]\n    secret: K\n");
    let out = r.stella(&["notify", "test", "ops"]);
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr().contains("ERR_CONFIG_INVALID") && out.stderr().contains(":5"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_url_from_a_secret_is_never_printed_or_logged() {
    let port = free_port();
    let r = repo_with("  - id: hook\n    urlSecret: HOOK_URL\n    events: [\"run.*\"]\n    secret: OPS_KEY\n");
    let rx = Receiver::start(port, &r.outside("hook.ndjson"), 200);
    let out = crate::support::stella()
        .current_dir(r.path())
        .args(["notify", "test", "hook"])
        .env("STELLA_SECRET_OPS_KEY", KEY)
        .env("STELLA_SECRET_HOOK_URL", format!("http://127.0.0.1:{port}/S3CR3T-PATH"))
        .env("STELLA_LOG", "trace")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert_eq!(rx.got()[0]["path"], "/S3CR3T-PATH");
    assert!(
        !printed.contains("S3CR3T-PATH") && !printed.contains(&format!("127.0.0.1:{port}")) && !printed.contains(KEY),
        "{printed}"
    );
    assert!(printed.contains("answered HTTP 200"), "{printed}");
}

#[test]
fn https_receivers_are_trusted_through_ssl_cert_file() {
    let port = free_port();
    let r = repo_with(&format!(
        "  - id: tls\n    url: https://127.0.0.1:{port}/hook\n    events: [\"run.*\"]\n    secret: OPS_KEY\n"
    ));
    let log = r.outside("tls.ndjson");
    let rx = Receiver::start_with(port, &log, 200, "tls");
    let cert = format!("{}.cert.pem", log.display());
    let test = |ssl_cert_file: Option<&str>| {
        let mut c = crate::support::stella();
        c.current_dir(r.path())
            .args(["notify", "test", "tls"])
            .env("STELLA_SECRET_OPS_KEY", KEY);
        match ssl_cert_file {
            Some(f) => c.env("SSL_CERT_FILE", f),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        c.output().unwrap()
    };
    let trusted = test(Some(&cert));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert_eq!(rx.got()[0]["verified"], true);
    // Not signed by any root the system knows: refused, and said so.
    let untrusted = test(None);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS failed"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert_eq!(rx.got().len(), 1);
}

#[test]
fn a_daemon_lacking_a_targets_secret_says_so_at_start() {
    let r = repo_with(&ops_target(free_port(), "[\"run.*\"]"));
    let out = r.daemon_once();
    assert_eq!(out.code(), Some(0), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("notify target `ops`: the runner secret `OPS_KEY` holding its signing key is not set"),
        "{}",
        out.stderr()
    );
}
