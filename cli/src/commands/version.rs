//! `infra version`: show the client's version and, when a current server answers, the server's.

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::api::Client;
use crate::args::Format;
use crate::output::{self, Table};
use crate::ui;

#[derive(Debug, Serialize)]
struct Versions {
    client: String,
    server: Option<String>,
}

pub async fn run(ctx: &Ctx, format: Format) -> Result<()> {
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
