//! The sharded layout (`runs/_<xx>/<id>/`, docs/ledger.md#the-sharded-layout) beside the flat
//! one of older ledgers: both run, read, verify and export; the `runs/` tree stays bounded; a
//! run in the wrong shard or a second directory for one id is reported and never run.

use crate::support::{HELLO, Repo, run_path};

const REQUEST: &str = "apiVersion: stella/v1\nkind: RunRequest\npack: packs/hello\n";

/// The names of the entries of directory `dir` at HEAD.
fn entries(r: &Repo, dir: &str) -> Vec<String> {
    let out = r.git(&["ls-tree", "--name-only", "HEAD", &format!("{dir}/")]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn flat_and_sharded_runs_live_side_by_side() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    r.write("runs/f1/request.yaml", REQUEST).commit_all("a flat request");
    for id in ["s1", "s2", "s3"] {
        r.request(id, "hello", "{}\n");
    }
    r.daemon_once().ok();
    for id in ["f1", "s1", "s2", "s3"] {
        assert_eq!(r.state(id), "succeeded", "{id}");
    }
    // The index (and its cached trees, which the runner invalidates only where it wrote)
    // describes exactly the tip: a person's next commit keeps every runner file.
    let written = r.git(&["write-tree"]);
    let tip = r.git(&["rev-parse", "HEAD^{tree}"]);
    assert_eq!(written.stdout, tip.stdout);
    assert!(r.status_porcelain().is_empty(), "{}", r.status_porcelain());
    assert!(r.at_head("runs/f1/evidence/manifest.json").is_some());
    assert!(
        r.at_head(&format!("{}/evidence/manifest.json", run_path("s1")))
            .is_some()
    );
    // Under runs/ there are only shards, the flat run and the README.
    let mut top = entries(&r, "runs");
    top.sort();
    let mut expected: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| run_path(id).split('/').nth(1).unwrap().to_string())
        .chain(["README.md".to_string(), "f1".to_string()])
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(top, expected);
    // Every reader sees all four.
    let list = r.stella(&["runs", "list", "--json"]).ok().stdout();
    for id in ["f1", "s1", "s2", "s3"] {
        assert!(list.contains(&format!("\"{id}\"")), "{list}");
    }
    let verify = r.stella(&["ledger", "verify"]).ok().stdout();
    assert!(verify.contains("4 runs"), "{verify}");
    for id in ["f1", "s2"] {
        let export = r.outside(&format!("{id}.tar.gz"));
        r.stella(&["runs", "export", id, "--output", export.to_str().unwrap()])
            .ok();
        r.stella(&["evidence", "verify", export.to_str().unwrap()]).ok();
    }
    // The manifest names the run's files where they are.
    let manifest = r
        .at_head(&format!("{}/evidence/manifest.json", run_path("s2")))
        .unwrap();
    assert!(
        manifest.contains(&format!("{}/request.yaml", run_path("s2"))),
        "{manifest}"
    );
}

#[test]
fn a_run_in_the_wrong_shard_or_a_second_directory_for_one_id_never_runs() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    let shard = run_path("w1").split('/').nth(1).unwrap().to_string();
    let wrong = if shard == "_00" { "_01" } else { "_00" };
    r.write(&format!("runs/{wrong}/w1/request.yaml"), REQUEST);
    // d1 twice: flat (the run) and in its shard (reported, ignored).
    r.write("runs/d1/request.yaml", REQUEST);
    r.write(&format!("{}/request.yaml", run_path("d1")), REQUEST);
    r.write("runs/f2/request.yaml", REQUEST);
    r.commit_all("misplaced requests");
    let out = r.daemon_once().ok();
    let err = out.stderr();
    assert!(err.contains(&format!("runs/{wrong}/w1")), "{err}");
    assert!(err.contains(&run_path("d1")), "{err}");
    assert_eq!(r.state("d1"), "succeeded");
    assert!(r.at_head("runs/d1/plan.json").is_some());
    assert!(
        r.at_head(&format!("{}/plan.json", run_path("d1"))).is_none(),
        "the second directory of d1 is left alone"
    );
    let show = r.stella(&["runs", "show", "w1"]);
    assert_eq!(show.code(), Some(2), "{}", show.stderr());
    assert!(r.at_head(&format!("runs/{wrong}/w1/plan.json")).is_none());
    r.stella(&["ledger", "verify"]).ok();
    // A new request may not take an id a flat run has.
    let again = r.request_uncommitted("f2", "hello", "{}\n");
    assert_eq!(again.code(), Some(2), "{}", again.stderr());
    assert!(
        again.stderr().contains("runs/f2/request.yaml already exists"),
        "{}",
        again.stderr()
    );
}
