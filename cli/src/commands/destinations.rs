//! `infra destinations list|remove`: the clusters whose infra-proxy registered with this server.

use anyhow::Result;

use super::{Ctx, connect};
use crate::api;
use crate::args::DestinationsCommand;
use crate::output::{self, Table};

pub fn destinations_table(list: &[api::Destination]) -> String {
    let mut t = Table::new(["NAME", "URL", "CONNECTED", "VERSION", "LAST SEEN"]);
    for d in list {
        t.row([
            d.name.clone(),
            d.url.clone(),
            if d.connected { "yes" } else { "no" }.to_owned(),
            if d.version.is_empty() {
                "-".to_owned()
            } else {
                d.version.clone()
            },
            output::time(d.last_seen_at),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: DestinationsCommand) -> Result<()> {
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
