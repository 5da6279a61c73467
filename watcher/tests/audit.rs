//! The audit export (`stella runs export --since T --until T --ndjson`): exactly the events of
//! the window, compared with every run's event files read straight from git, in the stable
//! order, each with its run id, then a manifest line whose digest covers the lines.

use serde_json::Value as Json;
use stella_engine::pack::sha256_hex;

use crate::support::{HELLO, Repo};

fn time(ts: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(ts).unwrap()
}

#[test]
fn the_ndjson_export_of_a_window_holds_exactly_the_events_in_it() {
    let r = Repo::new();
    r.pack("hello", HELLO);
    let failing = HELLO
        .replace("name: hello", "name: broken")
        .replace("echo said=yes >> $STELLA_OUTPUT", "exit 3");
    r.pack("broken", &failing);
    for (id, pack) in [("r1", "hello"), ("r2", "broken"), ("r3", "hello"), ("r4", "hello")] {
        r.request(id, pack, "{}\n");
        r.daemon_once().ok();
    }
    let ids = ["r1", "r2", "r3", "r4"];
    let all: Vec<(String, Json)> = ids
        .iter()
        .flat_map(|id| r.events(id).into_iter().map(|e| (id.to_string(), e)))
        .collect();
    // [first event of r2, first event of r4): r2 and r3 whole, nothing of r1 or r4.
    let since = r.events("r2")[0]["ts"].as_str().unwrap().to_string();
    let until = r.events("r4")[0]["ts"].as_str().unwrap().to_string();
    let out = r
        .stella(&["runs", "export", "--since", &since, "--until", &until, "--ndjson"])
        .ok();
    let text = out.stdout();
    let mut lines: Vec<&str> = text.lines().collect();
    let manifest: Json = serde_json::from_str(lines.pop().unwrap()).unwrap();
    let got: Vec<Json> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();

    let mut want: Vec<(String, Json)> = all
        .iter()
        .filter(|(_, e)| {
            let at = time(e["ts"].as_str().unwrap());
            at >= time(&since) && at < time(&until)
        })
        .cloned()
        .collect();
    want.sort_by(|(ra, a), (rb, b)| {
        (time(a["ts"].as_str().unwrap()), ra, a["seq"].as_u64()).cmp(&(
            time(b["ts"].as_str().unwrap()),
            rb,
            b["seq"].as_u64(),
        ))
    });
    assert!(want.iter().any(|(id, _)| id == "r2") && want.iter().any(|(id, _)| id == "r3"));
    assert!(!want.iter().any(|(id, _)| id == "r1" || id == "r4"));
    let want: Vec<Json> = want
        .into_iter()
        .map(|(id, e)| {
            let mut line = serde_json::Map::new();
            line.insert("run".into(), Json::String(id));
            line.extend(e.as_object().unwrap().clone());
            Json::Object(line)
        })
        .collect();
    assert_eq!(got, want);

    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(manifest["type"], "export.manifest");
    assert_eq!(manifest["events"], got.len());
    assert_eq!(manifest["runs"], 2);
    assert_eq!(manifest["sha256"].as_str(), Some(sha256_hex(body.as_bytes()).as_str()));
    let head = r.git(&["rev-parse", "HEAD"]);
    assert_eq!(
        manifest["commit"].as_str(),
        Some(String::from_utf8_lossy(&head.stdout).trim())
    );
    // r1 ended before the window and r4 began at its end: the scan skips them unread.
    assert!(
        out.stderr()
            .contains(&format!("exported {} events of 2 runs (2 read)", got.len())),
        "{}",
        out.stderr()
    );

    // A date window takes the whole day; -o writes the same export to a file.
    let day = &since[..10];
    let next =
        humantime::format_rfc3339_seconds(time(&format!("{day}T00:00:00Z")) + std::time::Duration::from_secs(86_400))
            .to_string();
    let file = r.outside("audit.ndjson");
    let out = r
        .stella(&[
            "runs",
            "export",
            "--since",
            day,
            "--until",
            &next[..10],
            "--ndjson",
            "-o",
            file.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(out.stdout(), "");
    let whole = std::fs::read_to_string(&file).unwrap();
    assert_eq!(whole.lines().count(), all.len() + 1);

    // The archive of one run is unchanged; a half-given window is a usage error.
    let archive = r.outside("r1.tar.gz");
    r.stella(&["runs", "export", "r1", "-o", archive.to_str().unwrap()])
        .ok();
    for args in [
        &["runs", "export", "--since", day, "--ndjson"][..],
        &["runs", "export", "--since", "soon", "--until", day, "--ndjson"],
    ] {
        let out = r.stella(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr());
    }
}
