//! `infra whoami`: show the user the session belongs to, its groups, whether it is an admin, and
//! the server.

use anyhow::Result;
use serde::Serialize;

use super::{Ctx, connect};
use crate::args::Format;
use crate::output::{self, Table};
use crate::state::display_server;

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

pub async fn run(ctx: &Ctx, format: Format) -> Result<()> {
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
