//! The `infra-proxy` binary: configuration, runtime, serve, drain.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use infra_proxy::config::{self, Cli, Command, ServeArgs, ValidateArgs};
use infra_proxy::{app, policy};

fn main() -> ExitCode {
    let args = match config::with_config_file(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Serve(args) => {
            init_tracing(&args.log_format);
            match run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match policy::load(&args.policy) {
        Ok(loaded) => {
            let summary =
                infra_authz::policy::file::summary(&args.policy.display().to_string(), &loaded);
            #[allow(clippy::print_stdout)] // The summary is this command's output.
            {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            if !errors.to_string().ends_with('\n') {
                eprintln!();
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(args: ServeArgs) -> Result<()> {
    // One crypto provider for the whole process (see docs/dependencies.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let grace = Duration::from_secs(args.shutdown_grace_seconds);
        let running = app::start(args).await?;
        shutdown_signal().await;
        tracing::info!("shutting down: draining open requests");
        let left = running.drain.drain(grace).await;
        if left > 0 {
            tracing::warn!(
                connections = left,
                "closing connections still open after the grace period"
            );
        }
        // What is queued for the audit log is written (or spooled) before the process ends.
        running.proxy.audit.close().await;
        // The audit export's lease is let go, so another replica takes over at once.
        running.stop_control().await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Upgraded streams and watches still open are cut here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
