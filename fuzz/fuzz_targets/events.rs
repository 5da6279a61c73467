//! Event files (`events.ndjson` in the ledger, the local journal) through `event::read_ndjson`
//! and `state::fold`, what every reader and resume rely on.
//! Invariants: nothing panics; fold is total (any events, in any order, fold to a state, and
//! so does every prefix); events written back with `Event::to_line` read back the same and
//! fold to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stella_engine::event::read_ndjson;
use stella_engine::state::fold;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(events) = read_ndjson(&text) else {
        return;
    };
    let state = fold(&events);
    let _ = fold(&events[..events.len() / 2]);
    if let Some(max) = events.iter().map(|e| e.seq).max() {
        assert!(
            state.next_seq > max || max == u64::MAX,
            "next_seq {} after seq {max}",
            state.next_seq
        );
    }
    let lines: String = events.iter().map(|e| e.to_line() + "\n").collect();
    let back = read_ndjson(&lines).unwrap_or_else(|e| panic!("written events do not read back: {e}\n{lines}"));
    assert_eq!(back.len(), events.len());
    for (a, b) in events.iter().zip(&back) {
        assert_eq!(
            (a.seq, &a.ts, &a.kind, &a.step, &a.level, &a.msg),
            (b.seq, &b.ts, &b.kind, &b.step, &b.level, &b.msg)
        );
    }
    let again = fold(&back);
    assert_eq!(
        (again.state, again.next_seq, again.steps.len()),
        (state.state, state.next_seq, state.steps.len())
    );
});
