//! `infra groups add|remove|list|adduser|removeuser`: manage groups and their members.

use anyhow::Result;

use super::{Ctx, connect};
use crate::api;
use crate::args::GroupsCommand;
use crate::output::{self, Table};

pub fn groups_table(groups: &[api::Group]) -> String {
    let mut t = Table::new(["NAME", "MEMBERS", "SOURCE", "CREATED"]);
    for g in groups {
        t.row([
            g.name.clone(),
            g.members.to_string(),
            g.source.to_string(),
            output::time(Some(g.created_at)),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: GroupsCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        GroupsCommand::Add(args) => {
            client.add_group(&args.name).await?;
            eprintln!("  Added group {}", args.name);
        }
        GroupsCommand::Remove(args) => {
            client.remove_group(&args.name).await?;
            eprintln!("  Removed group {}", args.name);
        }
        GroupsCommand::List(args) => {
            let list = client.groups(args.name.as_deref()).await?;
            output::emit(args.output.output, &list, || groups_table(&list))?;
        }
        GroupsCommand::Adduser(args) => {
            client.add_member(&args.group, &args.user).await?;
            eprintln!("  Added {} to group {}", args.user, args.group);
        }
        GroupsCommand::Removeuser(args) => {
            client.remove_member(&args.group, &args.user).await?;
            eprintln!("  Removed {} from group {}", args.user, args.group);
        }
    }
    Ok(())
}
