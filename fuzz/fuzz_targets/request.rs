//! `runs/<id>/request.yaml`, hostile input from a pull request, through `Request::parse`.
//! Invariants: nothing panics; a parsed request rendered again with `Request::render` (what
//! `stella run request` writes) parses back to the same pack, inputs and plan hash (unless it
//! used aliases, whose expansion may take it past the YAML limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::request::Request;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(request) = Request::parse("request.yaml", &text) else {
        return;
    };
    let inputs = request
        .inputs
        .as_ref()
        .map_or_else(|| serde_json::json!({}), |n| n.to_json());
    let hash = request
        .plan_hash
        .clone()
        .unwrap_or_else(|| format!("sha256:{}", "0".repeat(64)));
    let rendered = Request::render(&request.pack, &inputs, &hash);
    let back = match Request::parse("request.yaml", &rendered) {
        Ok(back) => back,
        // Aliases are expanded when rendered, so the rendered file may pass the limits.
        Err(_) if text.contains('*') => return,
        Err(d) => panic!("a rendered request does not parse: {d}\n{rendered}"),
    };
    assert_eq!(back.pack, request.pack);
    assert_eq!(back.plan_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(back.inputs.map(|n| n.to_json()).unwrap_or_default(), inputs);
});
