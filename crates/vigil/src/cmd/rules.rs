//! `vigil rules check FILE`: validate a rules file and list its rules.

use std::path::PathBuf;

use anyhow::Result;

use crate::settings::load_rules_file;

/// Arguments of `vigil rules`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Actions of `vigil rules`.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Validate a rules file; prints every problem with file:line:column.
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// Print the built-in rules file.
    Default,
}

/// Runs `vigil rules`.
pub fn run(a: Args) -> Result<()> {
    match a.action {
        Action::Check { file } => {
            let rules = load_rules_file(&file)?;
            println!(
                "{}: ok ({} threshold, {} trend, {} offline, {} invalid_input, {} maintenance windows)",
                file.display(),
                rules.threshold.len(),
                rules.trend.len(),
                usize::from(rules.offline.is_some()),
                usize::from(rules.invalid_input.is_some()),
                rules.maintenance.len()
            );
        }
        Action::Default => print!("{}", vigil_ops::rules::DEFAULT_RULES_TOML),
    }
    Ok(())
}
