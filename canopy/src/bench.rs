//! `canopy bench`: benchmark workloads that print figures.

use clap::Subcommand;

/// Benchmark suites.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {}
}
