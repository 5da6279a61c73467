//! Compresses the debug info of `stella`'s release builds on Linux (zlib, which std's
//! backtraces, gdb and addr2line read): crash reports keep file and line at a fraction of the
//! size. Only passes a linker flag; generates nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if release && linux {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
    }
}
