//! `infra completion SHELL`: print a bash, zsh or fish completion script for `infra`, generated
//! from the clap definition. Needs no server and no runtime.

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, CompletionArgs, Shell};
use crate::ui;

pub fn run(args: &CompletionArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "infra", &mut script);
    ui::out(&String::from_utf8_lossy(&script))
}
