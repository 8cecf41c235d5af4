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
            let families: Vec<String> = rules
                .rule_counts()
                .into_iter()
                .map(|(family, n)| format!("{n} {family}"))
                .collect();
            println!(
                "{}: ok ({}, {} maintenance windows)",
                file.display(),
                families.join(", "),
                rules.maintenance.len()
            );
        }
        Action::Default => print!("{}", vigil_ops::rules::DEFAULT_RULES_TOML),
    }
    Ok(())
}
