//! `infra why USER VERB RESOURCE [NAME] [-n NS] [-d DESTINATION]`: the decision infra-proxy makes
//! for that request, and the grant and role rule that make it, or why none of the user's grants
//! allows it — what an admin reaches for when someone says "it says forbidden".

use anyhow::Result;
use infra_api::{Why, WhyGrant};

use super::{Ctx, connect};
use crate::args::WhyArgs;
use crate::output::{self, Table};

fn grant_words(grant: &WhyGrant) -> String {
    let subject = match (&grant.user, &grant.group) {
        (Some(user), _) => format!("user {user}"),
        (None, Some(group)) => format!("group {group}"),
        (None, None) => "-".to_owned(),
    };
    let expiry = grant
        .expires_at
        .map(|at| format!(" (until {})", output::time(Some(at))))
        .unwrap_or_default();
    format!("{} to {subject} on {}{expiry}", grant.role, grant.resource)
}

/// The answer, for a terminal.
pub fn why_table(why: &Why) -> String {
    let mut t = Table::default();
    t.row(["DECISION", if why.allowed { "allowed" } else { "denied" }]);
    t.row(["REQUEST", why.request.as_str()]);
    t.row(["USER", why.user.as_str()]);
    t.row([
        "GROUPS".to_owned(),
        if why.groups.is_empty() {
            "-".to_owned()
        } else {
            why.groups.join(", ")
        },
    ]);
    t.row(["DESTINATION", why.destination.as_str()]);
    if let Some(grant) = &why.allowed_by {
        t.row(["GRANT".to_owned(), grant_words(grant)]);
    }
    if let Some(rule) = &why.rule {
        let mut parts = vec![format!("#{}: verbs {:?}", rule.index, rule.verbs)];
        if rule.non_resource_urls.is_empty() {
            parts.push(format!("apiGroups {:?}", rule.api_groups));
            parts.push(format!("resources {:?}", rule.resources));
            if !rule.resource_names.is_empty() {
                parts.push(format!("resourceNames {:?}", rule.resource_names));
            }
        } else {
            parts.push(format!("nonResourceURLs {:?}", rule.non_resource_urls));
        }
        let words = parts.join(", ");
        t.row(["RULE".to_owned(), words]);
    }
    for not in &why.not_allowed {
        t.row([
            "NOT BY".to_owned(),
            format!("{}: {}", grant_words(&not.grant), not.why),
        ]);
    }
    t.row(["REASON", why.reason.as_str()]);
    for note in &why.notes {
        t.row(["NOTE", note.as_str()]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, args: &WhyArgs) -> Result<()> {
    let (_, _, client) = connect(ctx)?;
    let mut query = vec![
        ("user", args.user.clone()),
        ("verb", args.verb.clone()),
        ("resource", args.resource.clone()),
    ];
    if let Some(name) = &args.name {
        query.push(("name", name.clone()));
    }
    if let Some(namespace) = &args.namespace {
        query.push(("namespace", namespace.clone()));
    }
    if let Some(destination) = &args.destination {
        query.push(("destination", destination.clone()));
    }
    let why = client.why(&query).await?;
    output::emit(args.output.output, &why, || why_table(&why))
}
