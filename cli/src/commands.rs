//! From parsed arguments to a command, and what several commands share: the context each gets,
//! connecting to the current server with the session key, and syncing the caller's access into
//! the kubeconfig. Each command (or command group) lives in `commands/`; `login` and the `tokens`
//! credential plugin have their own modules (`crate::login`, `crate::tokens`). Commands that need
//! a server run on a current-thread runtime; the credential plugin's cached path and `completion`
//! need none.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};

use crate::api::{Access, Client};
use crate::args::{Cli, Command};
use crate::kubeconfig;
use crate::state::{Config, Home, Server, display_server};
use crate::ui::{self, Prompter};

mod audit;
mod completion;
mod destinations;
mod grants;
mod groups;
mod keys;
mod list;
mod logout;
mod providers;
mod requests;
mod use_;
mod users;
mod version;
mod whoami;
mod why;

// The snapshot tests (`crate::snapshots`) render each command's table through these paths.
#[cfg(test)]
pub use self::{
    destinations::destinations_table, grants::grants_table, groups::groups_table, keys::keys_table,
    list::list_items, list::list_table, providers::providers_table, users::users_table,
    whoami::whoami_table,
};

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    pub home: Home,
    pub prompt: Prompter,
}

pub fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        home: Home::locate()?,
        prompt: Prompter {
            non_interactive: cli.non_interactive,
        },
    };
    match cli.command {
        Command::Completion(args) => completion::run(&args),
        Command::Tokens(args) => crate::tokens::run(&ctx.home, &args.destination),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run_async(&ctx, command))
        }
    }
}

async fn run_async(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Login(args) => crate::login::login(ctx, &args).await,
        Command::Logout(args) => logout::run(ctx, &args).await,
        Command::List(args) => list::run(ctx, args.output.output).await,
        Command::Use(args) => use_::run(ctx, &args.destination).await,
        Command::Grants(c) => grants::run(ctx, c).await,
        Command::Users(c) => users::run(ctx, c).await,
        Command::Groups(c) => groups::run(ctx, c).await,
        Command::Keys(c) => keys::run(ctx, c).await,
        Command::Destinations(c) => destinations::run(ctx, c).await,
        Command::Providers(c) => providers::run(ctx, c).await,
        Command::Request(args) => requests::ask(ctx, &args).await,
        Command::Requests(c) => requests::run(ctx, c).await,
        Command::Whoami(args) => whoami::run(ctx, args.output.output).await,
        Command::Why(args) => why::run(ctx, &args).await,
        Command::Audit(args) => audit::run(ctx, &args).await,
        Command::Version(args) => version::run(ctx, args.output.output).await,
        Command::Completion(_) | Command::Tokens(_) => unreachable!("handled without a runtime"),
    }
}

/// The current server and a client with its session key.
fn connect(ctx: &Ctx) -> Result<(Config, Server, Client)> {
    let config = ctx.home.config()?;
    let server = config.current_server()?.clone();
    let session = ctx.home.session(&server.url)?.ok_or_else(|| {
        ui::hint(
            anyhow!("not logged in to {}", display_server(&server.url)),
            format!("run `infra login {}`", display_server(&server.url)),
        )
    })?;
    let client = Client::new(&server, Some(session.access_key))?;
    Ok((config, server, client))
}

/// What Infra writes to the kubeconfig for the caller's access.
pub fn kubeconfig_destinations(access: &[Access]) -> Vec<kubeconfig::Destination> {
    let mut by_name: BTreeMap<&str, Vec<&Access>> = BTreeMap::new();
    for a in access {
        by_name.entry(&a.destination).or_default().push(a);
    }
    by_name
        .into_iter()
        .map(|(name, entries)| {
            let whole_cluster = entries.iter().any(|a| a.namespace.is_none());
            let mut namespaces: Vec<&str> = entries
                .iter()
                .filter_map(|a| a.namespace.as_deref())
                .collect();
            namespaces.sort_unstable();
            kubeconfig::Destination {
                name: name.to_owned(),
                url: entries[0].url.clone(),
                ca_pem: Some(entries[0].ca_pem.clone()),
                namespace: if whole_cluster {
                    None
                } else {
                    namespaces.first().map(|s| (*s).to_owned())
                },
            }
        })
        .collect()
}

/// Fetches the caller's access and brings the kubeconfig in line: entries for every destination
/// reached, none for those of this server no longer reached.
pub async fn sync_access(ctx: &Ctx, config: &mut Config, client: &Client) -> Result<Vec<Access>> {
    let access = client.my_access().await.context("reading your access")?;
    let wanted = kubeconfig_destinations(&access);
    let server = client.server().to_owned();
    let path = kubeconfig::path()?;
    let exe = kubeconfig::current_exe()?;
    let changes = kubeconfig::edit(&path, |kc| {
        let other_server = |d: &str| config.destinations.get(d).is_some_and(|s| *s != server);
        Ok(kc.sync(&exe, &wanted, &other_server))
    })?;
    for removed in &changes.removed {
        eprintln!("  Removed context infra:{removed}: you no longer have access to it");
    }
    if let Some(current) = &changes.current {
        eprintln!("  kubectl now uses {current} (it had no current context); `infra use` switches");
    }
    config.set_destinations(&server, wanted.iter().map(|d| d.name.as_str()));
    ctx.home.save_config(config)?;
    Ok(access)
}
