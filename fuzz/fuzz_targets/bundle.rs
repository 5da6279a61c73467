//! Evidence archives (`stella runs export`, `stella evidence verify`): `export::read_archive`
//! within a byte limit, and `verify::verify_archive`. The first byte picks a mode: the rest
//! is a `.tar.gz`; or a tar that the target gzips (so mutations reach the tar headers); or a
//! tar, gzipped, through the whole offline verification.
//! Invariants: nothing panics; what is read stays within the limit, under normalised paths,
//! and an archive written from it with `export_archive` reads back the same.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use stella_engine::evidence::{export_archive, read_archive, verify_archive};

const LIMIT: u64 = 1 << 20;

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).expect("writes to memory");
    gz.finish().expect("writes to memory")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let archive = match mode % 3 {
        0 => rest.to_vec(),
        1 => gzip(rest),
        _ => {
            let _ = verify_archive(&gzip(rest), None);
            let _ = verify_archive(&gzip(rest), Some(&stella_fuzz::signers_line("runner")));
            return;
        }
    };
    let Ok(files) = read_archive(&archive, LIMIT) else {
        return;
    };
    let total: usize = files.values().map(Vec::len).sum();
    assert!(total as u64 <= LIMIT);
    for path in files.keys() {
        assert_eq!(stella_engine::pack::normalise(path).as_deref(), Some(path.as_str()));
    }
    let written = export_archive(&files).expect("writes to memory");
    let back = read_archive(&written, LIMIT).expect("an exported archive reads back");
    assert_eq!(back, files);
});
