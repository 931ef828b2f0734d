//! `infra logout [--all] [--clear]`: revoke the session on the server (or just forget it here
//! when it cannot be revoked), drop the cached tokens and Infra's kubeconfig entries for the
//! current server or all of them, and with `--clear` forget the server too.

use anyhow::Result;

use super::Ctx;
use crate::api::{self, Client};
use crate::args::LogoutArgs;
use crate::kubeconfig;
use crate::state::{Server, display_server};
use crate::ui;

pub async fn run(ctx: &Ctx, args: &LogoutArgs) -> Result<()> {
    let mut config = ctx.home.config()?;
    let servers: Vec<Server> = if args.all {
        config.servers.clone()
    } else {
        let Ok(current) = config.current_server() else {
            eprintln!("  Not logged in.");
            return Ok(());
        };
        vec![current.clone()]
    };
    for server in &servers {
        if let Some(session) = ctx.home.session(&server.url)? {
            let revoked = match Client::new(server, Some(session.access_key)) {
                Ok(client) => client.logout().await,
                Err(e) => Err(e),
            };
            match revoked {
                Ok(()) => {}
                Err(e) if api::ApiError::find(&e).is_some_and(|a| a.status == 401) => {}
                Err(e) => ui::warn(format!(
                    "the session on {} could not be revoked on the server, only forgotten here: {e:#}",
                    display_server(&server.url)
                )),
            }
            ctx.home.save_session(&server.url, None)?;
        }
        ctx.home.clear_tokens(&server.url)?;
        let gone: Vec<String> = config
            .destinations
            .iter()
            .filter(|(_, s)| **s == server.url)
            .map(|(d, _)| d.clone())
            .collect();
        let path = kubeconfig::path()?;
        kubeconfig::edit(&path, |kc| {
            if args.all {
                let all = kc.infra_destinations();
                kc.remove(&all);
            } else {
                kc.remove(&gone);
            }
            Ok(())
        })?;
        config.set_destinations(&server.url, std::iter::empty());
        if args.clear {
            config.servers.retain(|s| s.url != server.url);
            if config.current.as_deref() == Some(&server.url) {
                config.current = None;
            }
        }
        eprintln!("  Logged out of {}", display_server(&server.url));
    }
    if args.all {
        config.destinations.clear();
    }
    ctx.home.save_config(&config)
}
