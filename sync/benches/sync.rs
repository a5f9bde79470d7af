//! Sync benchmarks: `cargo bench -p canopy-sync --features bench --bench sync -- [--json] [N...]`.
//!
//! For each document size N (default 100000 and 1000000 ops) builds a replica with a 10k-node
//! subtree X, then measures: cold full sync to an empty replica, the in-sync check, 1,000 and 1%
//! random differences (half on each side), a cold partial sync of X with a subtree read filter,
//! and a warm partial sync after 100 changes in X (in-memory transport, `MemoryStore`); then the
//! cold partial sync again from the same kind of document in a SQLite file (the server's case);
//! last, a cold partial sync from an authorized replica of signed ops through the capability read
//! filter (`CapsRead`, depth-2 chain), at 100k ops (or the smallest size given).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![100_000, 1_000_000];
    }
    let print = |f: &canopy_sync::bench::Figure| {
        if json {
            println!("{}", f.to_json());
        } else {
            println!(
                "{:>19} doc={:>8} diff={:>7} ({:>9} B) nodes={:>6} bytes={:>10} msgs={:>5} rt={} {:>10.2} ms",
                f.scenario, f.doc_ops, f.diff_ops, f.diff_op_bytes, f.nodes, f.bytes, f.messages, f.round_trips, f.ms
            );
        }
    };
    let sizes_for_caps = sizes.iter().copied().min().unwrap_or(100_000).min(100_000);
    for n in sizes {
        let x = 10_000.min(n / 2);
        let result = canopy_sync::bench::run(n, x, print)
            .and_then(|_| canopy_sync::bench::run_sqlite_partial(n, x, print));
        if let Err(e) = result {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
    // read filtering by capability on an authorized replica (signed ops; building is slow, so
    // one size: 100k ops, or the smallest size asked for)
    let n = sizes_for_caps;
    if let Err(e) = canopy_sync::bench::run_caps_partial(n, 10_000.min(n / 2), print) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
