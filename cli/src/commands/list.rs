//! `infra list`: sync the caller's access into the kubeconfig, then show each destination (and
//! namespace) they may reach, with their roles and when the access expires.

use std::collections::BTreeMap;

use anyhow::Result;
use jiff::Timestamp;
use serde::Serialize;

use super::{Ctx, connect, sync_access};
use crate::api::Access;
use crate::args::Format;
use crate::output::{self, Table};

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

pub async fn run(ctx: &Ctx, format: Format) -> Result<()> {
    let (mut config, _, client) = connect(ctx)?;
    let access = sync_access(ctx, &mut config, &client).await?;
    let items = list_items(&access);
    if items.is_empty() && format == Format::Table {
        eprintln!("  You have no access to any destination yet.");
        return Ok(());
    }
    output::emit(format, &items, || list_table(&items))
}
