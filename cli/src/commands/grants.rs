//! `infra grants add|remove|list`: give, take away and list access, a user or a group with a
//! role on a resource (optionally for a limited time).

use anyhow::{Context, Result, anyhow};
use jiff::{SignedDuration, Timestamp};

use super::{Ctx, connect};
use crate::api::{self, GrantFilter};
use crate::args::{GrantSubject, GrantsCommand};
use crate::output::{self, Table};
use crate::ui::{self, HintExt};

/// (user, group, resource) from `USER RESOURCE` or `-g GROUP RESOURCE`.
fn subject(s: &GrantSubject) -> Result<(Option<String>, Option<String>, String)> {
    match (&s.group, s.names.as_slice()) {
        (Some(g), [resource]) => Ok((None, Some(g.clone()), resource.clone())),
        (None, [user, resource]) => Ok((Some(user.clone()), None, resource.clone())),
        (Some(_), _) => Err(ui::usage(
            "with -g GROUP, name only the resource: `infra grants add -g GROUP RESOURCE --role ROLE`",
        )),
        (None, _) => Err(ui::usage(
            "name a user and a resource (`USER RESOURCE`), or a group with -g (`-g GROUP RESOURCE`)",
        )),
    }
}

fn grant_who(g: &api::Grant) -> String {
    g.user
        .clone()
        .or_else(|| g.group.clone())
        .unwrap_or_default()
}

pub fn grants_table(grants: &[api::Grant]) -> String {
    let users: Vec<&api::Grant> = grants.iter().filter(|g| g.user.is_some()).collect();
    let groups: Vec<&api::Grant> = grants.iter().filter(|g| g.user.is_none()).collect();
    let expiring = grants.iter().any(|g| g.expires_at.is_some());
    let requested = grants.iter().any(|g| g.request_id.is_some());
    let mut t = Table::default();
    for (label, section) in [("USER", &users), ("GROUP", &groups)] {
        if section.is_empty() {
            continue;
        }
        let mut header = vec![
            format!("{label} ({})", section.len()),
            "ROLE".into(),
            "DESTINATION".into(),
        ];
        if expiring {
            header.push("EXPIRES".into());
        }
        if requested {
            header.push("REQUEST".into());
        }
        t.row(header);
        for g in section {
            let mut row = vec![grant_who(g), g.role.clone(), g.resource.clone()];
            if expiring {
                row.push(output::time(g.expires_at));
            }
            if requested {
                row.push(
                    g.request_id
                        .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                );
            }
            t.row(row);
        }
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: GrantsCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        GrantsCommand::Add(args) => {
            let (user, group, resource) = subject(&args.subject)?;
            let expires_at = match args.for_ {
                Some(d) => Some(
                    Timestamp::now()
                        .checked_add(SignedDuration::try_from(d).context("--for is too long")?)
                        .context("--for is too long")?,
                ),
                None => None,
            };
            let grant = client
                .add_grant(
                    user.as_deref(),
                    group.as_deref(),
                    &args.role,
                    &resource,
                    expires_at,
                )
                .await
                .context("adding the grant")?;
            let who = match (&grant.user, &grant.group) {
                (Some(u), _) => format!("user {u}"),
                (None, Some(g)) => format!("group {g}"),
                (None, None) => "?".to_owned(),
            };
            match grant.expires_at {
                Some(t) => eprintln!(
                    "  Granted {} on {} to {who} until {t}",
                    grant.role, grant.resource
                ),
                None => eprintln!("  Granted {} on {} to {who}", grant.role, grant.resource),
            }
            Ok(())
        }
        GrantsCommand::Remove(args) => {
            let (user, group, resource) = subject(&args.subject)?;
            let filter = GrantFilter {
                user: user.clone(),
                group: group.clone(),
                resource: Some(resource.clone()),
                role: args.role.clone(),
                ..GrantFilter::default()
            };
            let found: Vec<api::Grant> = client
                .grants(&filter)
                .await?
                .into_iter()
                // The filters are the server's; check them here too before deleting anything.
                .filter(|g| {
                    g.user == user
                        && g.group == group
                        && g.resource == resource
                        && args.role.as_ref().is_none_or(|r| *r == g.role)
                })
                .collect();
            if found.is_empty() {
                let who = user.or(group).unwrap_or_default();
                return Err(anyhow!(
                    "{who} has no grant{} on {resource}",
                    args.role
                        .map(|r| format!(" of role {r}"))
                        .unwrap_or_default()
                ))
                .hint("`infra grants list` shows the grants");
            }
            for g in &found {
                client
                    .remove_grant(g.id)
                    .await
                    .with_context(|| format!("removing grant {}", g.id))?;
                eprintln!(
                    "  Removed {} on {} from {}",
                    g.role,
                    g.resource,
                    grant_who(g)
                );
            }
            Ok(())
        }
        GrantsCommand::List(args) => {
            let filter = GrantFilter {
                user: args.user,
                group: args.group,
                resource: args.resource,
                destination: args.destination,
                role: args.role,
            };
            let mut list = client.grants(&filter).await?;
            list.sort_by(|a, b| {
                (a.user.is_none(), grant_who(a), &a.resource, &a.role).cmp(&(
                    b.user.is_none(),
                    grant_who(b),
                    &b.resource,
                    &b.role,
                ))
            });
            output::emit(args.output.output, &list, || grants_table(&list))
        }
    }
}
