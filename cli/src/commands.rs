//! What each command does. Commands that need a server run on a current-thread runtime; the
//! credential plugin's cached path and `completion` need none.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use clap::CommandFactory;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;

use crate::api::{self, Access, Client, GrantFilter};
use crate::args::{
    Cli, Command, CompletionArgs, DestinationsCommand, Format, GrantSubject, GrantsCommand,
    GroupsCommand, KeysCommand, LogoutArgs, ProvidersCommand, Shell, UserPasswordArgs,
    UsersCommand,
};
use crate::kubeconfig;
use crate::output::{self, Table};
use crate::state::{Config, Home, Server, display_server};
use crate::ui::{self, HintExt, Prompter};

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
        Command::Completion(args) => completion(&args),
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
        Command::Logout(args) => logout(ctx, &args).await,
        Command::List(args) => list(ctx, args.output.output).await,
        Command::Use(args) => use_destination(ctx, &args.destination).await,
        Command::Grants(c) => grants(ctx, c).await,
        Command::Users(c) => users(ctx, c).await,
        Command::Groups(c) => groups(ctx, c).await,
        Command::Keys(c) => keys(ctx, c).await,
        Command::Destinations(c) => destinations(ctx, c).await,
        Command::Providers(c) => providers(ctx, c).await,
        Command::Whoami(args) => whoami(ctx, args.output.output).await,
        Command::Version(args) => version(ctx, args.output.output).await,
        Command::Completion(_) | Command::Tokens(_) => unreachable!("handled without a runtime"),
    }
}

fn completion(args: &CompletionArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "infra", &mut script);
    ui::out(&String::from_utf8_lossy(&script))
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
                ca_pem: entries[0].ca_pem.clone(),
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
    config.set_destinations(&server, wanted.iter().map(|d| d.name.as_str()));
    ctx.home.save_config(config)?;
    Ok(access)
}

async fn logout(ctx: &Ctx, args: &LogoutArgs) -> Result<()> {
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

/// One row of `infra list`.
#[derive(Debug, Serialize)]
pub struct ListItem {
    name: String,
    destination: String,
    namespace: Option<String>,
    roles: Vec<String>,
    expires_at: Option<Timestamp>,
    url: String,
}

pub fn list_items(access: &[Access]) -> Vec<ListItem> {
    let mut items: BTreeMap<(String, Option<String>), ListItem> = BTreeMap::new();
    for a in access {
        let key = (a.destination.clone(), a.namespace.clone());
        let item = items.entry(key).or_insert_with(|| ListItem {
            name: match &a.namespace {
                Some(ns) => format!("{}.{ns}", a.destination),
                None => a.destination.clone(),
            },
            destination: a.destination.clone(),
            namespace: a.namespace.clone(),
            roles: Vec::new(),
            expires_at: a.expires_at,
            url: a.url.clone(),
        });
        if !item.roles.contains(&a.role) {
            item.roles.push(a.role.clone());
        }
        // The access lasts as long as its longest-lived grant; none = no expiry.
        item.expires_at = match (item.expires_at, a.expires_at) {
            (Some(x), Some(y)) => Some(x.max(y)),
            _ => None,
        };
    }
    items.into_values().collect()
}

pub fn list_table(items: &[ListItem]) -> String {
    let expiring = items.iter().any(|i| i.expires_at.is_some());
    let mut header = vec!["NAME", "ACCESS"];
    if expiring {
        header.push("EXPIRES");
    }
    let mut t = Table::new(header);
    for i in items {
        let mut row = vec![i.name.clone(), i.roles.join(", ")];
        if expiring {
            row.push(output::time(i.expires_at));
        }
        t.row(row);
    }
    t.render()
}

async fn list(ctx: &Ctx, format: Format) -> Result<()> {
    let (mut config, _, client) = connect(ctx)?;
    let access = sync_access(ctx, &mut config, &client).await?;
    let items = list_items(&access);
    if items.is_empty() && format == Format::Table {
        eprintln!("  You have no access to any destination yet.");
        return Ok(());
    }
    output::emit(format, &items, || list_table(&items))
}

async fn use_destination(ctx: &Ctx, target: &str) -> Result<()> {
    let (destination, namespace) = match target.split_once('.') {
        Some((d, ns)) => (d, Some(ns)),
        None => (target, None),
    };
    let (mut config, _, client) = connect(ctx)?;
    let access = sync_access(ctx, &mut config, &client).await?;
    let mine: Vec<&Access> = access
        .iter()
        .filter(|a| a.destination == destination)
        .collect();
    if mine.is_empty() {
        return Err(ui::hint(
            anyhow!("you have no access to destination {destination:?}"),
            "`infra list` shows where you may go",
        ));
    }
    let whole_cluster = mine.iter().any(|a| a.namespace.is_none());
    let namespace = match namespace {
        Some(ns) if !whole_cluster && !mine.iter().any(|a| a.namespace.as_deref() == Some(ns)) => {
            return Err(ui::hint(
                anyhow!("you have no access to namespace {ns:?} of {destination:?}"),
                "`infra list` shows where you may go",
            ));
        }
        Some(ns) => Some(ns.to_owned()),
        None if whole_cluster => None,
        None => {
            let mut namespaces: Vec<&str> =
                mine.iter().filter_map(|a| a.namespace.as_deref()).collect();
            namespaces.sort_unstable();
            namespaces.first().map(|s| (*s).to_owned())
        }
    };
    let path = kubeconfig::path()?;
    kubeconfig::edit(&path, |kc| {
        kc.use_context(destination, namespace.as_deref())
    })?;
    match namespace {
        Some(ns) => eprintln!("Switched context to `{destination}` (namespace `{ns}`)"),
        None => eprintln!("Switched context to `{destination}`"),
    }
    Ok(())
}

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
        t.row(header);
        for g in section {
            let mut row = vec![grant_who(g), g.role.clone(), g.resource.clone()];
            if expiring {
                row.push(output::time(g.expires_at));
            }
            t.row(row);
        }
    }
    t.render()
}

async fn grants(ctx: &Ctx, command: GrantsCommand) -> Result<()> {
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
                    .remove_grant(&g.id)
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
            u.source.clone(),
            output::time(u.created_at),
        ]);
    }
    t.render()
}

async fn users(ctx: &Ctx, command: UsersCommand) -> Result<()> {
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
    }
    Ok(())
}

pub fn groups_table(groups: &[api::Group]) -> String {
    let mut t = Table::new(["NAME", "MEMBERS", "SOURCE", "CREATED"]);
    for g in groups {
        t.row([
            g.name.clone(),
            g.members.to_string(),
            g.source.clone(),
            output::time(g.created_at),
        ]);
    }
    t.render()
}

async fn groups(ctx: &Ctx, command: GroupsCommand) -> Result<()> {
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
            k.kind.clone(),
            output::time(k.created_at),
            output::time(k.expires_at),
            output::time(k.last_used_at),
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

async fn keys(ctx: &Ctx, command: KeysCommand) -> Result<()> {
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

pub fn destinations_table(list: &[api::Destination]) -> String {
    let mut t = Table::new(["NAME", "URL", "CONNECTED", "VERSION", "LAST SEEN"]);
    for d in list {
        t.row([
            d.name.clone(),
            d.url.clone(),
            if d.connected { "yes" } else { "no" }.to_owned(),
            d.version.clone().unwrap_or_else(|| "-".to_owned()),
            output::time(d.last_seen_at),
        ]);
    }
    t.render()
}

async fn destinations(ctx: &Ctx, command: DestinationsCommand) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    match command {
        DestinationsCommand::List(args) => {
            let list = client.destinations().await?;
            output::emit(args.output.output, &list, || destinations_table(&list))
        }
        DestinationsCommand::Remove(args) => {
            client.remove_destination(&args.name).await?;
            eprintln!("  Removed destination {}", args.name);
            Ok(())
        }
    }
}

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

async fn providers(ctx: &Ctx, command: ProvidersCommand) -> Result<()> {
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

#[derive(Debug, Serialize)]
struct Whoami {
    name: String,
    groups: Vec<String>,
    admin: bool,
    server: String,
}

pub fn whoami_table(name: &str, server: &str, groups: &[String], admin: bool) -> String {
    let mut t = Table::default();
    t.row(["USER", name]);
    t.row(["SERVER", display_server(server)]);
    t.row([
        "GROUPS".to_owned(),
        if groups.is_empty() {
            "-".to_owned()
        } else {
            groups.join(", ")
        },
    ]);
    t.row(["ADMIN", if admin { "yes" } else { "no" }]);
    t.render()
}

async fn whoami(ctx: &Ctx, format: Format) -> Result<()> {
    let (_, server, client) = connect(ctx)?;
    let me = client.me().await?;
    let data = Whoami {
        name: me.name,
        groups: me.groups,
        admin: me.admin,
        server: server.url,
    };
    output::emit(format, &data, || {
        whoami_table(&data.name, &data.server, &data.groups, data.admin)
    })
}

#[derive(Debug, Serialize)]
struct Versions {
    client: String,
    server: Option<String>,
}

async fn version(ctx: &Ctx, format: Format) -> Result<()> {
    let client_version = env!("CARGO_PKG_VERSION").to_owned();
    let config = ctx.home.config()?;
    let server = match config.current_server() {
        Ok(server) => {
            let answer = match Client::new(server, None) {
                Ok(c) => c.version().await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(v) => Some(v.version),
                Err(e) => {
                    ui::warn(format!(
                        "the server's version is unknown: {}",
                        ui::render_error(&e, false).trim_end().replace('\n', "; ")
                    ));
                    None
                }
            }
        }
        Err(_) => None,
    };
    let data = Versions {
        client: client_version,
        server,
    };
    output::emit(format, &data, || {
        let mut t = Table::default();
        t.row(["CLIENT", data.client.as_str()]);
        t.row(["SERVER", data.server.as_deref().unwrap_or("-")]);
        t.render()
    })
}
