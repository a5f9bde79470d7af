//! `canopy policy test PATH...`: the policy scenario runner (`spec/policy-tests.md`).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Subcommand;

/// Policy scenario commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Run policy scenario files (or directories of *.toml): one line per case, then
    /// `N passed, M failed`; fails when any case fails.
    Test {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Runs a policy command.
pub fn run(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Test { paths } => {
            let files = canopy_policy_tests::collect(&paths).context("listing scenario files")?;
            let mut out = std::io::stdout().lock();
            let sum = canopy_policy_tests::run_files(&files, &mut out)?;
            if sum.failed > 0 {
                bail!("{} policy scenario(s) failed", sum.failed);
            }
            if sum.passed == 0 {
                bail!("no policy scenarios found");
            }
            Ok(())
        }
    }
}
