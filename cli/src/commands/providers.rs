//! `infra providers add|edit|list|remove`: manage OpenID Connect identity providers; the client
//! secret is sent only when given, never read back.

use anyhow::Result;
use serde_json::json;

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
            p.kind.clone(),
            p.url.clone(),
            p.client_id.clone(),
            p.source.clone(),
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
            let mut body = json!({
                "name": args.name,
                "kind": args.kind.as_str(),
                "url": args.url,
                "client_id": args.client_id,
                "client_secret": secret,
            });
            if !args.scopes.is_empty() {
                body["scopes"] = json!(args.scopes);
            }
            let p = client.add_provider(body).await?;
            eprintln!("  Added identity provider {} ({})", p.name, p.url);
        }
        ProvidersCommand::Edit(args) => {
            let current = client.provider(&args.name).await?;
            let mut body = json!({
                "name": current.name,
                "kind": args.kind.map_or(current.kind.clone(), |k| k.as_str().to_owned()),
                "url": args.url.unwrap_or(current.url),
                "client_id": args.client_id.unwrap_or(current.client_id),
                "scopes": args.scopes.unwrap_or(current.scopes),
                "revision": current.revision,
            });
            // The server never shows the secret; it is sent only when it changes.
            if let Some(secret) = client_secret(args.client_secret, args.client_secret_stdin)? {
                body["client_secret"] = json!(secret);
            }
            let p = client.edit_provider(&args.name, body).await?;
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
