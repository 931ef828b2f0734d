//! What each command does.

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, Command, CompletionArgs, Shell};
use crate::ui;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completion(args) => completion(&args),
        _ => Err(anyhow::anyhow!("not built yet")),
    }
}

fn completion(args: &CompletionArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "infra", &mut script);
    ui::out(&String::from_utf8_lossy(&script))
}
