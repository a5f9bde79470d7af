//! `canopy`: the project's one command-line entry point.

use clap::{Parser, Subcommand};

mod bench;
mod caps_cmd;
mod doc_cmd;
mod net_cmd;
mod partial_cmd;
mod policy_cmd;

/// Canopy: a local-first sync engine for large trees with capability-based access control.
#[derive(Debug, Parser)]
#[command(name = "canopy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a sync server: many documents (one SQLite file each in the data directory), many
    /// clients, live fan-out.
    Serve(net_cmd::ServeArgs),
    /// Sync a local replica (full, or of one subtree) with a server.
    Sync(net_cmd::SyncArgs),
    /// A document's local replica: create one, add nodes, list children.
    #[command(subcommand)]
    Doc(doc_cmd::DocCmd),
    /// Run benchmarks and print their figures.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Ed25519 keys as did:key.
    #[command(subcommand)]
    Key(caps_cmd::KeyCmd),
    /// UCAN delegations: mint, inspect, verify.
    #[command(subcommand)]
    Token(caps_cmd::TokenCmd),
    /// Share links for a subtree.
    #[command(subcommand)]
    Share(caps_cmd::ShareCmd),
    /// UCAN specification tools (fixture runner).
    #[command(subcommand)]
    Ucan(caps_cmd::UcanCmd),
    /// Policy scenarios: run them against the authorized apply.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => net_cmd::serve(args),
        Command::Sync(args) => net_cmd::sync(args),
        Command::Doc(cmd) => doc_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Key(cmd) => caps_cmd::key(cmd),
        Command::Token(cmd) => caps_cmd::token(cmd),
        Command::Share(cmd) => caps_cmd::share(cmd),
        Command::Ucan(cmd) => caps_cmd::ucan(cmd),
        Command::Policy(cmd) => policy_cmd::run(cmd),
    }
}
