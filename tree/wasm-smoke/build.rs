//! With the `sqlite` feature on wasm32-unknown-unknown, SQLite (sqlite-wasm-rs, no wasm-bindgen) needs
//! five host services. Let exactly those five symbols stay undefined, so they become imports of module
//! `env` that the host provides (`sqlite-host.mjs`); any other undefined symbol still fails the link.
//!
//! The symbol list is written into `OUT_DIR` (not read from the source tree): cargo may reuse this
//! script's output for another checkout of the same workspace sharing the target dir, so the linker
//! argument must not point into one checkout.

/// The host services sqlite-wasm-rs 0.6 links against (`src/host/mod.rs`).
const HOST_IMPORTS: [&str; 5] = [
    "rust_sqlite_wasm_host_sleep",
    "rust_sqlite_wasm_host_random",
    "rust_sqlite_wasm_host_epoch_timestamp_in_ms",
    "rust_sqlite_wasm_host_fill_entropy",
    "rust_sqlite_wasm_host_localtime",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "wasm32-unknown-unknown" && std::env::var_os("CARGO_FEATURE_SQLITE").is_some() {
        let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
        let list = std::path::Path::new(&out).join("sqlite-host-imports.txt");
        std::fs::write(&list, HOST_IMPORTS.join("\n") + "\n").expect("write the import list");
        println!(
            "cargo:rustc-cdylib-link-arg=--allow-undefined-file={}",
            list.display()
        );
    }
}
