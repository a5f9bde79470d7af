//! `policy-tests PATH...`: runs Canopy policy scenario files (`spec/policy-tests.md`). Each PATH
//! is a scenario file or a directory of `*.toml` scenarios. Prints one line per case and a
//! closing `N passed, M failed`; exits 1 when a case fails, 2 on a usage or IO error.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: policy-tests PATH... (scenario files or directories of *.toml)");
        return ExitCode::from(2);
    }
    let files = match canopy_policy_tests::collect(&paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("policy-tests: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match canopy_policy_tests::run_files(&files, &mut out) {
        Ok(sum) if sum.failed == 0 && sum.passed > 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("policy-tests: {e}");
            ExitCode::from(2)
        }
    }
}
