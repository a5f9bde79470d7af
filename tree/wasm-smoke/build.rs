//! With the `sqlite` feature on wasm32-unknown-unknown, SQLite (sqlite-wasm-rs, no wasm-bindgen) needs
//! five host services. Let exactly those five symbols stay undefined, so they become imports of module
//! `env` that the host provides (`sqlite-host.mjs`); any other undefined symbol still fails the link.

fn main() {
    println!("cargo:rerun-if-changed=sqlite-host-imports.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "wasm32-unknown-unknown" && std::env::var_os("CARGO_FEATURE_SQLITE").is_some() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let list = std::path::Path::new(&dir).join("sqlite-host-imports.txt");
        println!(
            "cargo:rustc-cdylib-link-arg=--allow-undefined-file={}",
            list.display()
        );
    }
}
