//! `infra users add|edit|remove|list`: manage local users and their passwords.

use anyhow::Result;

use super::{Ctx, connect};
use crate::api;
use crate::args::{UserPasswordArgs, UsersCommand};
use crate::output::{self, Table};
use crate::ui;

fn new_password(ctx: &Ctx, args: &UserPasswordArgs) -> Result<Option<String>> {
    if args.password_stdin {
        return ui::read_stdin_line("the password").map(Some);
    }
    if args.prompt_password {
        return ctx
            .prompt
            .password(
                &format!("Password for {}", args.name),
                true,
                "pass --password-stdin",
            )
            .map(Some);
    }
    Ok(None)
}

pub fn users_table(users: &[api::User]) -> String {
    let mut t = Table::new(["NAME", "PASSWORD", "GROUPS", "SOURCE", "CREATED"]);
    for u in users {
        t.row([
            u.name.clone(),
            if u.has_password { "yes" } else { "no" }.to_owned(),
            if u.groups.is_empty() {
                "-".to_owned()
            } else {
                u.groups.join(", ")
            },
            u.source.to_string(),
            output::time(Some(u.created_at)),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: UsersCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        UsersCommand::Add(args) => {
            let password = new_password(ctx, &args)?;
            let user = client.add_user(&args.name, password.as_deref()).await?;
            eprintln!(
                "  Added user {}{}",
                user.name,
                if user.has_password || password.is_some() {
                    " with a password"
                } else {
                    ""
                }
            );
        }
        UsersCommand::Edit(args) => {
            let Some(password) = new_password(ctx, &args)? else {
                return Err(ui::usage(
                    "say how to give the new password: --password-stdin or --prompt-password",
                ));
            };
            client.set_password(&args.name, &password).await?;
            eprintln!("  Changed the password of {}", args.name);
        }
        UsersCommand::Remove(args) => {
            client.remove_user(&args.name).await?;
            eprintln!("  Removed user {}", args.name);
        }
        UsersCommand::List(args) => {
            let list = client.users(args.name.as_deref()).await?;
            output::emit(args.output.output, &list, || users_table(&list))?;
        }
        UsersCommand::Unlock(args) => {
            client.unlock_user(&args.name).await?;
            eprintln!("  Unlocked logins of {}", args.name);
        }
        UsersCommand::Link(args) => {
            client
                .link_identity(&args.name, &args.provider, &args.subject)
                .await?;
            eprintln!(
                "  Linked {} {} to user {}",
                args.provider, args.subject, args.name
            );
        }
    }
    Ok(())
}
