//! A pack manifest and an inputs file, through the whole of `plan::from_files`: YAML parse within
//! limits, decode, check, inputs, plan, hash. Input: `pack.yaml`, then optionally a NUL byte
//! and `inputs.yaml`. The example packs' scripts and schemas sit beside the manifest, so
//! references to them resolve.
//! Invariants: nothing panics; a plan built twice has the same hash; its `plan.json` reads
//! back to the same plan and hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::pack::PackFiles;
use stella_engine::plan::{Plan, PlanConfig};

const FILES: &[(&str, &[u8])] = &[
    ("latency.sh", include_bytes!("../../packs/parallel-checks/latency.sh")),
    ("fix.sh", include_bytes!("../../packs/sbom-remediation/fix.sh")),
    ("scan.sh", include_bytes!("../../packs/sbom-remediation/scan.sh")),
    ("summary.sh", include_bytes!("../../packs/sbom-remediation/summary.sh")),
    (
        "schemas/targets.schema.json",
        include_bytes!("../../packs/sbom-remediation/schemas/targets.schema.json"),
    ),
    (
        "schemas/inputs.schema.json",
        include_bytes!("../../packs/bundle-ingest/schemas/inputs.schema.json"),
    ),
];

fuzz_target!(|data: &[u8]| {
    let (manifest, inputs) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut files: Vec<(String, Vec<u8>)> = FILES.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect();
    files.push(("pack.yaml".into(), manifest.to_vec()));
    let files = PackFiles::from_files("packs/fuzz", files).expect("fixed paths stay in the pack");
    let node = match inputs.map(|b| stella_engine::inputs::parse("inputs.yaml", &String::from_utf8_lossy(b))) {
        Some(Ok(node)) => Some(node),
        Some(Err(_)) => None,
        None => None,
    };
    let sealed = manifest.len() % 2 == 1;
    let config = PlanConfig {
        sealed,
        allow: vec!["example.com".into()],
    };
    let Ok(plan) = stella_engine::plan::from_files(&files, node.as_ref(), "inputs.yaml", &config) else {
        return;
    };
    let hash = plan.hash();
    let again = stella_engine::plan::from_files(&files, node.as_ref(), "inputs.yaml", &config)
        .expect("planned once, plans again");
    assert_eq!(again.hash(), hash, "planning is deterministic");
    let (read, stated) = Plan::from_plan_json(&plan.to_plan_json()).expect("plan.json reads back");
    assert_eq!(stated, hash);
    assert_eq!(read.hash(), hash);
});
