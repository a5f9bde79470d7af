//! `canopy bench`: benchmark workloads that print figures (results go in `BENCHMARKS.md`).

use std::time::Instant;

use clap::Subcommand;

mod seed;
mod sqlite;
mod sync;
mod tree;

/// Benchmark suites.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// The seed's workloads (insert-chain, bulk-insert-root-siblings) at one storage tier.
    Seed(seed::SeedArgs),
    /// Tree workloads: move-to-first, random moves, two-replica merge, key lengths.
    Tree(tree::TreeArgs),
    /// A 1M-node SQLite document: build time, file size, open + first children page in a fresh
    /// process (latency, peak RSS).
    Sqlite(sqlite::SqliteArgs),
    /// Sync: in-sync check, differences, partial sync (in memory), cold partial sync and
    /// concurrent pushes over loopback WebSocket.
    Sync(sync::SyncArgs),
}

/// Runs a benchmark suite.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Seed(args) => seed::run(args),
        BenchCmd::Tree(args) => tree::run(args),
        BenchCmd::Sqlite(args) => sqlite::run(args),
        BenchCmd::Sync(args) => sync::run(args),
    }
}

/// Milliseconds taken by `f`.
fn time_ms<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let t = Instant::now();
    let out = f()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, out))
}

/// The median of `xs` (sorts them).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// splitmix64: a small deterministic generator so runs are repeatable.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
