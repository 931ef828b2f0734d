//! `infra`: log in to an Infra server, keep the kubeconfig in step with the destinations you may
//! reach, manage grants, users, groups, keys and providers, and serve as kubectl's credential
//! plugin (`infra tokens`).
//!
//! Data goes to stdout, everything else to stderr. Exit codes: 0 success, 1 failure, 2 usage.

use std::process::ExitCode;

use clap::Parser;

mod api;
mod args;
mod commands;
mod duration;
mod files;
mod kubeconfig;
mod login;
mod output;
#[cfg(test)]
mod snapshots;
mod state;
mod tls;
mod tokens;
mod ui;

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2 (0 for --help and --version).
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            ui::report(&error);
            ExitCode::from(ui::exit_code(&error))
        }
    }
}
