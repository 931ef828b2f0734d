//! `infra use DESTINATION[.NAMESPACE]`: sync the caller's access, check they may reach the
//! destination (and namespace), and switch the kubectl context to it.

use anyhow::{Result, anyhow};

use super::{Ctx, connect, sync_access};
use crate::api::Access;
use crate::kubeconfig;
use crate::ui;

pub async fn run(ctx: &Ctx, target: &str) -> Result<()> {
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
