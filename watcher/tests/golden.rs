//! Golden files of the formats a run leaves (STYLE.md #6), beside the plan goldens in
//! `engine/tests/golden`: the event stream of an example run, an approval file with its
//! signature, and the run's attestation (with its statement decoded, for review), all made
//! with the committed test keys of `engine/tests/golden/keys`. What differs from one run to
//! the next is normalised by `normalise`, and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value as Json;
use stella_engine::event::Event;
use stella_engine::evidence::{RunRecord, build};
use stella_engine::keys::SshKey;
use stella_engine::plan::Plan;

use crate::golden_file::{assert_golden, golden_dir};
use crate::support::Repo;

/// The command that rewrites these golden files.
const BLESS: &str = "cargo test -p stella-watcher --test lib golden::";

/// One target, so no two steps run at once: the order of concurrent steps' events is not fixed.
const REQUEST: &str = "apiVersion: stella/v1\nkind: RunRequest\npack: packs/sbom-remediation\ninputs: { image: registry.local/app:1.4, targets: [api] }\n";

/// 2030-01-01T00:00:00Z, where the normalised clock starts.
const EPOCH_2030: u64 = 1_893_456_000;

fn key(name: &str) -> PathBuf {
    golden_dir().join("keys").join(name)
}

/// The example pack sbom-remediation run by the daemon as people would: requested, waiting
/// at its review gate, approved by alice, finished. The runner's key and alice's are the
/// committed test keys.
fn example_run() -> Repo {
    let r = Repo::new();
    let made = std::fs::read_to_string(r.path().join(".git/stella/runner_ed25519.pub")).unwrap();
    for file in ["runner_ed25519", "runner_ed25519.pub"] {
        std::fs::copy(key(file), r.path().join(".git/stella").join(file)).unwrap();
    }
    let blob = |line: &str| line.split_whitespace().nth(1).unwrap().to_string();
    let runner = blob(&std::fs::read_to_string(key("runner_ed25519.pub")).unwrap());
    let alice = std::fs::read_to_string(key("alice_ed25519.pub")).unwrap();
    let signers = std::fs::read_to_string(r.path().join(".stella/allowed_signers")).unwrap();
    r.write(
        ".stella/allowed_signers",
        &format!(
            "{}alice namespaces=\"stella-approval\" {alice}",
            signers.replace(&blob(&made), &runner)
        ),
    );
    r.write(".stella/approvers.yaml", "grants:\n  Packs.Approve: [alice]\n");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs/sbom-remediation"),
        &r.path().join("packs/sbom-remediation"),
    );
    r.commit_all("the example pack; alice may approve");
    r.write("runs/r1/request.yaml", REQUEST).commit_all("request r1");
    let secrets = r.outside("secrets.yaml");
    std::fs::write(&secrets, "registryToken: \"golden-token\"\n").unwrap();
    let daemon = [
        "daemon",
        "--once",
        "--repo",
        ".",
        "--secrets",
        secrets.to_str().unwrap(),
    ];
    r.stella(&daemon).ok();
    assert_eq!(r.state("r1"), "waiting");
    let alice_key = key("alice_ed25519");
    r.stella(&[
        "approve",
        "r1",
        "--gate",
        "security-review",
        "--key",
        alice_key.to_str().unwrap(),
    ])
    .ok();
    r.commit_all("alice approves r1");
    r.stella(&daemon).ok();
    assert_eq!(r.state("r1"), "succeeded");
    r
}

/// Copies `from` into `to`, file modes included (the pack's scripts are executable).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What differs between two runs of the same request, made the same every time: `ts` becomes
/// 2030-01-01T00:00:00Z plus `seq` seconds, every `durationMs` 0, and every commit id (40 hex
/// digits: `requestCommit`, `trustCommit`) 40 zeros.
fn normalise(mut e: Event) -> Event {
    fn walk(v: &mut Json) {
        match v {
            Json::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "durationMs" && v.is_number() {
                        *v = Json::from(0);
                    } else {
                        walk(v);
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(walk),
            Json::String(s) if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                *s = "0".repeat(40);
            }
            _ => {}
        }
    }
    let at = UNIX_EPOCH + Duration::from_secs(EPOCH_2030 + e.seq);
    e.ts = humantime::format_rfc3339_millis(at).to_string();
    if let Some(data) = &mut e.data {
        walk(data);
    }
    e
}

/// The files of `dir` at HEAD, by path.
fn files_at_head(r: &Repo, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let listed = r.git(&["ls-tree", "-r", "--name-only", "HEAD", dir]).stdout;
    String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(|p| (p.to_string(), r.git(&["show", &format!("HEAD:{p}")]).stdout))
        .collect()
}

#[test]
fn an_example_run_matches_its_golden_events_approval_and_attestation() {
    let r = example_run();
    let events: Vec<Event> = r
        .events("r1")
        .into_iter()
        .map(|e| normalise(serde_json::from_value(e).unwrap()))
        .collect();
    let ndjson: String = events.iter().map(|e| e.to_line() + "\n").collect();
    assert_golden("sbom-remediation.events.ndjson", &ndjson, BLESS);

    let approvals = files_at_head(&r, "approvals/r1/");
    let approval =
        |name: &str| String::from_utf8(approvals[&format!("approvals/r1/security-review/{name}")].clone()).unwrap();
    assert_golden("sbom-remediation.approval.yaml", &approval("alice.yaml"), BLESS);
    assert_golden("sbom-remediation.approval.yaml.sig", &approval("alice.yaml.sig"), BLESS);

    // The attestation of the run as its normalised events tell it, signed with the committed
    // runner key: the ledger's files of the run, its events as one segment.
    let plan = Plan::from_plan_json(&r.at_head("runs/r1/plan.json").unwrap())
        .unwrap()
        .0;
    let mut run_files: BTreeMap<String, Vec<u8>> = files_at_head(&r, "runs/r1/")
        .into_iter()
        .map(|(p, b)| (p.strip_prefix("runs/r1/").unwrap().to_string(), b))
        .filter(|(p, _)| p != "request.yaml" && !p.starts_with("events/") && !p.starts_with("evidence/"))
        .collect();
    run_files.insert("events/000000000000.ndjson".into(), ndjson.into_bytes());
    let started = events.iter().find(|e| e.kind == "run.started").unwrap();
    let record = RunRecord {
        run_id: "r1",
        dir: &stella_engine::layout::RunDir::flat("r1"),
        pack_path: "packs/sbom-remediation",
        plan: &plan,
        events: &events,
        run_files: &run_files,
        request: REQUEST.as_bytes(),
        cancel: None,
        approvals: &approvals,
        sealed: false,
        network_allow: &[],
        sandbox: started.get("sandbox").unwrap().clone(),
        secret_sources: &BTreeMap::from([("registryToken".to_string(), "file".to_string())]),
    };
    let (attestation, _) = build(&record, &SshKey::load(&key("runner_ed25519")).unwrap());
    let attestation = String::from_utf8(attestation).unwrap() + "\n";
    assert_golden("sbom-remediation.attestation.dsse.json", &attestation, BLESS);
    let envelope: Json = serde_json::from_str(&attestation).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: Json = serde_json::from_slice(&payload).unwrap();
    let statement = serde_json::to_string_pretty(&statement).unwrap() + "\n";
    assert_golden("sbom-remediation.statement.json", &statement, BLESS);
}
