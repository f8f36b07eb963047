//! `listings completions SHELL`: a completion script on stdout.

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
pub struct Opts {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(opts: Opts) {
    let mut command = Cli::command();
    clap_complete::generate(opts.shell, &mut command, "listings", &mut std::io::stdout());
}
