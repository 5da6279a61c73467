//! Air-gap round trips with git bundles, and bundles that must be refused with the
//! repository left exactly as it was.

use crate::support::{HELLO, Repo, run_path, stella};

fn refs(r: &Repo) -> String {
    String::from_utf8_lossy(&r.git(&["for-each-ref", "--format=%(refname) %(objectname)"]).stdout).into_owned()
}

/// An offline copy of `online`, made while they were still connected.
fn offline_copy(online: &Repo) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(online.path())
        .arg(dir.path().join("r"))
        .status()
        .unwrap();
    assert!(st.success());
    let offline = Repo { dir };
    // Work in the clone's directory: move it up to the temp dir root.
    let inner = offline.path().join("r");
    for entry in std::fs::read_dir(&inner).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), offline.path().join(entry.file_name())).unwrap();
    }
    std::fs::remove_dir(&inner).unwrap();
    // The offline site has its own runner key (the online one never leaves its machine).
    offline.stella(&["init", "."]).ok();
    offline.commit_all("offline runner key");
    offline
}

#[test]
fn a_full_air_gap_round_trip() {
    let online = Repo::new();
    online.pack("hello", HELLO);
    let offline = offline_copy(&online);
    // Online: a request is made and carried over.
    online.request("r1", "hello", "who: site-b\n");
    let bundle = online.outside("to-offline.bundle");
    online
        .stella(&[
            "sync",
            "export",
            "-o",
            bundle.to_str().unwrap(),
            "--to",
            "site-b",
            "--since",
            "HEAD~1",
        ])
        .ok();
    // Offline: import, run, carry the results back.
    let imported = offline.stella(&["sync", "import", bundle.to_str().unwrap()]);
    // The offline clone committed its own key, so the branches diverged: refused, unchanged.
    assert_eq!(imported.code(), Some(2), "{}", imported.stderr());
    assert!(
        imported.stderr().contains("error[ERR_BUNDLE_INVALID]") && imported.stderr().contains("diverged"),
        "{}",
        imported.stderr()
    );

    // A proper offline site shares history: clone after the runner keys are both committed.
    let offline = offline_copy(&online);
    online
        .write("notes.md", "bring offline up to date\n")
        .commit_all("online work");
    online.request("r2", "hello", "who: offline\n");
    let signers_after_offline_key = offline.path().join(".stella/allowed_signers");
    let offline_line = std::fs::read_to_string(&signers_after_offline_key).unwrap();
    online
        .write(".stella/allowed_signers", &offline_line)
        .commit_all("trust the offline runner");
    // (The offline side must not have commits of its own: reset its key commit away.)
    offline.git(&["reset", "-q", "--hard", "HEAD~1"]);
    let bundle = online.outside("round.bundle");
    online
        .stella(&["sync", "export", "-o", bundle.to_str().unwrap(), "--to", "site-b"])
        .ok();
    let out = offline.stella(&["sync", "import", bundle.to_str().unwrap()]).ok();
    assert!(out.stdout().contains("ledger verified"), "{}", out.stdout());
    assert!(
        offline.status_porcelain().is_empty(),
        "the working tree followed: {}",
        offline.status_porcelain()
    );
    offline.daemon_once().ok();
    assert_eq!(offline.state("r2"), "succeeded");
    // Back online: only what online lacks.
    let back = offline.outside("back.bundle");
    offline
        .stella(&["sync", "export", "-o", back.to_str().unwrap(), "--to", "online"])
        .ok();
    online.stella(&["sync", "import", back.to_str().unwrap()]).ok();
    assert_eq!(online.state("r2"), "succeeded");
    online.stella(&["ledger", "verify"]).ok();
    // Nothing new: a second export says so.
    let again = online.stella(&["sync", "export", "-o", bundle.to_str().unwrap(), "--to", "site-b"]);
    let _ = again;
}

/// Every file of the object store, so a refused import can be shown to add none.
fn objects(r: &Repo) -> Vec<String> {
    let root = r.path().join(".git/objects");
    let mut all: Vec<String> = walk(&root)
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    all.sort();
    all
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn refused(r: &Repo, bundle: &std::path::Path, code: &str) {
    let before = refs(r);
    let status = r.status_porcelain();
    let stored = objects(r);
    let out = r.stella(&["sync", "import", bundle.to_str().unwrap()]);
    assert_ne!(out.code(), Some(0), "the bundle should be refused");
    assert!(out.stderr().contains(&format!("error[{code}]")), "{}", out.stderr());
    assert_eq!(refs(r), before, "refs changed");
    assert_eq!(r.status_porcelain(), status, "working tree changed");
    assert_eq!(objects(r), stored, "objects were left behind");
}

fn pair() -> (Repo, Repo, std::path::PathBuf) {
    let online = Repo::new();
    online.pack("hello", HELLO);
    let offline = offline_copy(&online);
    offline.git(&["reset", "-q", "--hard", "HEAD~1"]);
    online.request("r1", "hello", "{}\n");
    online.daemon_once().ok();
    let bundle = online.outside("good.bundle");
    online.stella(&["sync", "export", "-o", bundle.to_str().unwrap()]).ok();
    (online, offline, bundle)
}

#[test]
fn truncated_and_corrupted_bundles_are_refused_and_change_nothing() {
    let (_online, offline, bundle) = pair();
    let bytes = std::fs::read(&bundle).unwrap();
    let truncated = bundle.with_extension("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(&offline, &truncated, "ERR_BUNDLE_INVALID");
    let mut corrupt = bytes.clone();
    let i = corrupt.len() - 40;
    corrupt[i] ^= 0xff;
    let corrupted = bundle.with_extension("corrupted");
    std::fs::write(&corrupted, corrupt).unwrap();
    refused(&offline, &corrupted, "ERR_BUNDLE_INVALID");
    refused(&offline, &bundle.with_extension("missing"), "ERR_BUNDLE_INVALID");
    // The good one still applies afterwards.
    offline.stella(&["sync", "import", bundle.to_str().unwrap()]).ok();
}

#[test]
fn a_divergent_bundle_is_refused() {
    let (_online, offline, bundle) = pair();
    offline
        .write("local.md", "offline work\n")
        .commit_all("offline diverges");
    refused(&offline, &bundle, "ERR_BUNDLE_INVALID");
}

#[test]
fn a_bundle_with_a_tampered_ledger_is_refused() {
    let (online, offline, _) = pair();
    let segment = online.event_file_with("r1", "run.succeeded");
    let events = online.at_head(&segment).unwrap().replace("succeeded", "failed");
    online.write(&segment, &events).tamper("rewrite the ledger");
    let bundle = online.outside("tampered.bundle");
    online
        .stella(&["sync", "export", "-o", bundle.to_str().unwrap(), "--to", "x"])
        .ok();
    refused(&offline, &bundle, "ERR_LEDGER_TAMPERED");
}

#[test]
fn a_dirty_working_tree_is_a_clear_refusal() {
    let (_online, offline, bundle) = pair();
    offline.write("packs/hello/pack.yaml", "edited locally\n");
    refused(&offline, &bundle, "ERR_USAGE");
}

#[test]
fn notes_alone_travel_and_merge_with_the_other_side() {
    let (online, offline, bundle) = pair();
    offline.stella(&["sync", "import", bundle.to_str().unwrap()]).ok();
    // Offline notes a commit of its own; online notes another, after the last export.
    offline.git(&["notes", "--ref=stella", "add", "-m", "offline note", "HEAD~1"]);
    online.git(&["notes", "--ref=stella", "add", "-m", "online note", "HEAD"]);
    let notes_only = online.outside("notes.bundle");
    let out = online
        .stella(&["sync", "export", "-o", notes_only.to_str().unwrap()])
        .ok();
    assert!(out.stderr().contains("refs/notes/stella only"), "{}", out.stderr());
    let out = offline.stella(&["sync", "import", notes_only.to_str().unwrap()]).ok();
    assert!(out.stdout().contains("refs/notes/stella: merged"), "{}", out.stdout());
    let show =
        |rev: &str| String::from_utf8_lossy(&offline.git(&["notes", "--ref=stella", "show", rev]).stdout).into_owned();
    assert!(show("HEAD").contains("online note"));
    assert!(show("HEAD~1").contains("offline note"));
    // Nothing moved since: a second export says so and writes nothing.
    let again = online.stella(&["sync", "export", "-o", notes_only.to_str().unwrap()]);
    assert_eq!(again.code(), Some(2));
    assert!(again.stderr().contains("nothing new"), "{}", again.stderr());
}

#[test]
fn an_older_bundle_is_nothing_new_and_an_untracked_file_in_the_way_is_refused() {
    let (online, offline, bundle) = pair();
    // Untracked on the offline side, and added by the bundle: refused before anything moves.
    offline.write(&format!("{}/request.yaml", run_path("r1")), "not committed\n");
    refused(&offline, &bundle, "ERR_USAGE");
    std::fs::remove_file(offline.path().join(format!("{}/request.yaml", run_path("r1")))).unwrap();
    std::fs::remove_dir(offline.path().join(run_path("r1"))).unwrap();
    // A file where the bundle needs a directory is in the way just the same.
    offline.write(&run_path("r1"), "not a directory\n");
    refused(&offline, &bundle, "ERR_USAGE");
    std::fs::remove_file(offline.path().join(run_path("r1"))).unwrap();
    offline.stella(&["sync", "import", bundle.to_str().unwrap()]).ok();
    // The online side moves on; the first bundle, imported again, is simply behind.
    online.request("r2", "hello", "{}\n");
    let newer = online.outside("newer.bundle");
    online.stella(&["sync", "export", "-o", newer.to_str().unwrap()]).ok();
    offline.stella(&["sync", "import", newer.to_str().unwrap()]).ok();
    let again = offline.stella(&["sync", "import", bundle.to_str().unwrap()]).ok();
    assert!(again.stdout().contains("already up to date"), "{}", again.stdout());
}

/// What a `stella sync import` killed by pid `pid` would have left: its quarantine repository
/// and its landing refs.
fn leave_an_import_behind(r: &Repo, pid: u32) -> std::path::PathBuf {
    let quarantine = r.path().join(format!(".git/stella/import-{pid}"));
    std::fs::create_dir_all(quarantine.join(".git/objects/info")).unwrap();
    std::fs::write(quarantine.join(".git/objects/info/alternates"), "objects\n").unwrap();
    r.git(&["update-ref", &format!("refs/stella/quarantine/{pid}"), "HEAD"]);
    r.git(&["update-ref", &format!("refs/stella/quarantine/{pid}-notes"), "HEAD"]);
    quarantine
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_killed_import_leaves_nothing_after_the_next_import_or_daemon_start() {
    let online = Repo::new();
    online.pack("hello", HELLO);
    let offline = offline_copy(&online);
    // A live stella process (a watching daemon of another repository) holds its quarantine.
    let elsewhere = Repo::new();
    let live = elsewhere.daemon(&["--repo", "."]);
    // A pid reused by a process that is not stella holds nothing.
    let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    for (r, next) in [(&offline, "sync import"), (&online, "daemon")] {
        let killed = leave_an_import_behind(r, dead_pid());
        let reused = leave_an_import_behind(r, sleeper.id());
        let running = leave_an_import_behind(r, live.pid() as u32);
        if next == "daemon" {
            r.daemon_once().ok();
        } else {
            // Even an import that fails at once (no such bundle) clears up first.
            assert_eq!(r.stella(&["sync", "import", "no-such.bundle"]).code(), Some(2));
        }
        assert!(!killed.exists() && !reused.exists(), "the leftovers are removed");
        assert!(running.exists(), "a live import's quarantine is left alone");
        let left = refs(r);
        let live_ref = format!("refs/stella/quarantine/{}", live.pid());
        assert_eq!(
            left.lines()
                .filter(|l| l.starts_with("refs/stella/quarantine/"))
                .count(),
            2,
            "only the live import's refs are left:\n{left}"
        );
        assert!(left.contains(&live_ref), "{left}");
    }
    live.kill();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn an_import_checks_the_commits_after_the_importers_checkpoint_and_still_refuses_tampering() {
    let online = Repo::with_finished_run();
    // A second copy of the same site (same runner key), whose verify leaves a checkpoint.
    let offline = Repo {
        dir: tempfile::tempdir().unwrap(),
    };
    let st = std::process::Command::new("git")
        .args(["clone", "-q", "--no-local"])
        .arg(online.path())
        .arg(offline.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all(offline.path().join(".git/stella")).unwrap();
    std::fs::copy(
        online.path().join(".git/stella/runner_ed25519"),
        offline.path().join(".git/stella/runner_ed25519"),
    )
    .unwrap();
    offline.stella(&["ledger", "verify"]).ok();
    assert!(offline.path().join(".git/stella/checkpoint").exists());

    online.request("r2", "hello", "{}\n");
    online.daemon_once().ok();
    let good = online.outside("good.bundle");
    online.stella(&["sync", "export", "-o", good.to_str().unwrap()]).ok();
    let segment = online.event_file_with("r2", "run.succeeded");
    let events = online.at_head(&segment).unwrap().replace("succeeded", "failed");
    online.write(&segment, &events).tamper("rewrite the ledger");
    let tampered = online.outside("tampered.bundle");
    online
        .stella(&["sync", "export", "-o", tampered.to_str().unwrap(), "--to", "x"])
        .ok();

    refused(&offline, &tampered, "ERR_LEDGER_TAMPERED");
    let out = stella()
        .current_dir(offline.path())
        .env("STELLA_LOG", "stella_engine::sync=debug")
        .args(["sync", "import", good.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("incoming history verified after the checkpoint"), "{log}");
    assert_eq!(offline.state("r2"), "succeeded");
}
