//! `infra keys add|list|remove`: manage access keys for scripts and CI; a new key's secret is
//! printed once, and a key is removed by its id or its (unique) name.

use anyhow::{Result, anyhow};
use jiff::{SignedDuration, Timestamp};

use super::{Ctx, connect};
use crate::api;
use crate::args::KeysCommand;
use crate::output::{self, Table};
use crate::ui::{self, HintExt};

pub fn keys_table(keys: &[api::AccessKey]) -> String {
    let mut t = Table::new([
        "ID",
        "NAME",
        "USER",
        "KIND",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ]);
    for k in keys {
        t.row([
            k.id.clone(),
            k.name.clone(),
            k.user.clone(),
            k.kind.to_string(),
            output::time(Some(k.created_at)),
            output::time(k.expires_at),
            output::time(Some(k.last_used_at)),
        ]);
    }
    t.render()
}

fn after(d: Option<std::time::Duration>, flag: &str) -> Result<Option<Timestamp>> {
    d.map(|d| {
        SignedDuration::try_from(d)
            .ok()
            .and_then(|d| Timestamp::now().checked_add(d).ok())
            .ok_or_else(|| ui::usage(format!("{flag} is too long")))
    })
    .transpose()
}

pub async fn run(ctx: &Ctx, command: KeysCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        KeysCommand::Add(args) => {
            let key = client
                .add_key(
                    &args.name,
                    args.user.as_deref(),
                    after(args.expires_in, "--expires-in")?,
                    args.inactivity_timeout.map(|d| d.as_secs()),
                )
                .await?;
            let secret = key
                .key
                .clone()
                .ok_or_else(|| anyhow!("the server's answer has no key"))?;
            eprintln!(
                "  Created access key {:?} ({}) for {}. It is shown only now; keep it secret:",
                key.name, key.id, key.user
            );
            ui::out(&format!("{secret}\n"))?;
        }
        KeysCommand::List(args) => {
            let list = client.keys(args.user.as_deref()).await?;
            output::emit(args.output.output, &list, || keys_table(&list))?;
        }
        KeysCommand::Remove(args) => {
            let list = client.keys(args.user.as_deref()).await?;
            let by_id: Vec<&api::AccessKey> = list.iter().filter(|k| k.id == args.key).collect();
            let matching: Vec<&api::AccessKey> = if by_id.is_empty() {
                list.iter().filter(|k| k.name == args.key).collect()
            } else {
                by_id
            };
            let key = match matching.as_slice() {
                [one] => *one,
                [] => {
                    return Err(anyhow!("no access key with id or name {:?}", args.key))
                        .hint("`infra keys list` shows the keys");
                }
                _ => {
                    return Err(ui::usage(format!(
                        "{} keys are named {:?}; remove one by its id",
                        matching.len(),
                        args.key
                    )));
                }
            };
            client.remove_key(&key.id).await?;
            eprintln!("  Removed access key {:?} ({})", key.name, key.id);
        }
    }
    Ok(())
}
