//! `infra providers add|edit|list|remove`: manage OpenID Connect identity providers; the client
//! secret is sent only when given, never read back.

use anyhow::Result;

use super::{Ctx, connect};
use crate::api;
use crate::args::ProvidersCommand;
use crate::output::{self, Table};
use crate::ui;

pub fn providers_table(list: &[api::Provider]) -> String {
    let mut t = Table::new(["NAME", "KIND", "URL", "CLIENT ID", "SOURCE"]);
    for p in list {
        t.row([
            p.name.clone(),
            p.kind.to_string(),
            p.url.clone(),
            p.client_id.clone(),
            p.source.to_string(),
        ]);
    }
    t.render()
}

fn client_secret(flag: Option<String>, stdin: bool) -> Result<Option<String>> {
    if stdin {
        return ui::read_stdin_line("the client secret").map(Some);
    }
    Ok(flag)
}

pub async fn run(ctx: &Ctx, command: ProvidersCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        ProvidersCommand::Add(args) => {
            let secret = client_secret(args.client_secret, args.client_secret_stdin)?
                .ok_or_else(|| {
                    ui::usage("a client secret is needed: --client-secret-stdin or INFRA_PROVIDER_CLIENT_SECRET")
                })?;
            let body = api::ProviderBody {
                name: Some(args.name),
                kind: Some(args.kind.as_str().to_owned()),
                url: args.url,
                client_id: args.client_id,
                client_secret: Some(secret),
                scopes: args.scopes,
                revision: None,
            };
            let p = client.add_provider(&body).await?;
            eprintln!("  Added identity provider {} ({})", p.name, p.url);
        }
        ProvidersCommand::Edit(args) => {
            let current = client.provider(&args.name).await?;
            // The server never shows the secret; it is sent only when it changes.
            let body = api::ProviderBody {
                name: Some(current.name),
                kind: Some(
                    args.kind
                        .map_or(current.kind.as_str(), |k| k.as_str())
                        .to_owned(),
                ),
                url: args.url.unwrap_or(current.url),
                client_id: args.client_id.unwrap_or(current.client_id),
                client_secret: client_secret(args.client_secret, args.client_secret_stdin)?,
                scopes: args.scopes.unwrap_or(current.scopes),
                revision: Some(current.revision),
            };
            let p = client.edit_provider(&args.name, &body).await?;
            eprintln!("  Changed identity provider {}", p.name);
        }
        ProvidersCommand::List(args) => {
            let list = client.providers().await?;
            output::emit(args.output.output, &list, || providers_table(&list))?;
        }
        ProvidersCommand::Remove(args) => {
            client.remove_provider(&args.name).await?;
            eprintln!("  Removed identity provider {}", args.name);
        }
    }
    Ok(())
}
