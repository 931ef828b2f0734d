//! `infra tokens --destination D`: kubectl's exec credential plugin.
//!
//! Prints a `client.authentication.k8s.io/v1` ExecCredential with a destination token. The token is
//! cached in `~/.infra/tokens/` (mode 0600) until shortly before it expires, so most kubectl calls
//! make no network call at all; otherwise it is fetched with the session key (`POST /api/tokens`).

use anyhow::{Context, Result, anyhow};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::api::{ApiError, Client};
use crate::state::{CachedToken, Home, display_server};
use crate::ui;

/// A cached token is used while it has at least this long to live.
pub const MARGIN: SignedDuration = SignedDuration::from_secs(30);

/// The ExecCredential kubectl reads on stdout.
pub fn exec_credential(token: &CachedToken) -> String {
    let mut text = json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "token": token.token,
            "expirationTimestamp": token.expires_at.to_string(),
        }
    })
    .to_string();
    text.push('\n');
    text
}

fn session_gone(server: &str) -> anyhow::Error {
    ui::hint(
        anyhow!("your Infra session on {} has ended", display_server(server)),
        format!(
            "run `infra login {}`, then run your kubectl command again",
            display_server(server)
        ),
    )
}

/// A fresh token for `destination`, from the cache when it has `MARGIN` to live at `now` and
/// `caller` (the kubectl process) has not been given it already: kubectl runs the plugin again
/// when the server answers 401, so a second request from the same process means the cached token
/// was refused (its session ended, its user lost access) and only the control plane can say
/// what now.
pub fn token(
    home: &Home,
    destination: &str,
    now: Timestamp,
    caller: Option<u32>,
) -> Result<CachedToken> {
    let config = home.config()?;
    let server_url = config
        .destinations
        .get(destination)
        .or(config.current.as_ref())
        .cloned()
        .ok_or_else(|| {
            ui::hint(
                anyhow!("not logged in to any Infra server"),
                "run `infra login SERVER`, then run your kubectl command again",
            )
        })?;
    if let Some(mut cached) = home.cached_token(&server_url, destination)
        && cached.expires_at.duration_since(now) > MARGIN
        && (caller.is_none() || cached.handed_to != caller)
    {
        if caller.is_some() {
            cached.handed_to = caller;
            if let Err(e) = home.save_token(&server_url, destination, &cached) {
                ui::warn(format!("{e:#}"));
            }
        }
        return Ok(cached);
    }
    let server = config
        .server(&server_url)
        .ok_or_else(|| session_gone(&server_url))?;
    let session = home
        .session(&server_url)?
        .filter(|s| s.expires_at.is_none_or(|at| at > now))
        .ok_or_else(|| session_gone(&server_url))?;
    let client = Client::new(server, Some(session.access_key))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let fresh =
        runtime
            .block_on(client.token(destination))
            .map_err(|e| match ApiError::find(&e) {
                Some(api) if api.status == 401 => session_gone(&server_url),
                _ => e.context(format!("getting a token for destination {destination:?}")),
            })?;
    let token = CachedToken {
        token: fresh.token,
        expires_at: fresh.expires_at,
        handed_to: caller,
    };
    if let Err(e) = home.save_token(&server_url, destination, &token) {
        // The token works without the cache; only the next call will be slower.
        ui::warn(format!("{e:#}"));
    }
    Ok(token)
}

pub fn run(home: &Home, destination: &str) -> Result<()> {
    let caller = std::os::unix::process::parent_id();
    let token = token(home, destination, Timestamp::now(), Some(caller))?;
    ui::out(&exec_credential(&token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Config, Server, Session, Trust};

    fn logged_in_home(dir: &std::path::Path, server: &str) -> Home {
        let home = Home::at(dir.join(".infra"));
        let mut config = Config::default();
        config.put_server(Server {
            url: server.into(),
            trust: Trust::InsecureSkipVerify,
            user: Some("suzie@example.com".into()),
        });
        config.current = Some(server.into());
        config.set_destinations(server, ["production"]);
        home.save_config(&config).expect("config");
        home.save_session(
            server,
            Some(Session {
                user: "suzie@example.com".into(),
                access_key: "id.secret".into(),
                expires_at: None,
            }),
        )
        .expect("session");
        home
    }

    #[test]
    fn a_cached_token_is_used_without_the_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Nothing listens on port 9 of this address: a network call would fail.
        let server = "https://127.0.0.1:9";
        let home = logged_in_home(dir.path(), server);
        let now = Timestamp::from_second(1_800_000_000).expect("ts");
        let cached = CachedToken {
            token: "cached.jwt".into(),
            expires_at: now + SignedDuration::from_mins(5),
            handed_to: None,
        };
        home.save_token(server, "production", &cached)
            .expect("save");
        let given = token(&home, "production", now, Some(4242)).expect("cached");
        assert_eq!(given.token, cached.token);
        assert_eq!(given.handed_to, Some(4242));
        // Another kubectl process gets it from the cache too.
        let again = token(&home, "production", now, Some(4343)).expect("cached");
        assert_eq!(again.token, cached.token);
        // The same process asking again means the server refused it: only the server can say
        // what now (and it is absent here).
        let err = token(&home, "production", now, Some(4343)).expect_err("refused token");
        assert!(format!("{err:#}").contains("127.0.0.1:9"), "{err:#}");
        assert_eq!(
            exec_credential(&cached),
            "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
             \"status\":{\"expirationTimestamp\":\"2027-01-15T08:05:00Z\",\"token\":\"cached.jwt\"}}\n"
        );

        // Within the margin the cache is not used: the (absent) server is asked, and fails.
        let later = cached.expires_at - SignedDuration::from_secs(10);
        let err = token(&home, "production", later, None).expect_err("needs the server");
        assert!(format!("{err:#}").contains("127.0.0.1:9"), "{err:#}");
    }

    #[test]
    fn without_a_session_it_says_to_log_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = "https://127.0.0.1:9";
        let home = logged_in_home(dir.path(), server);
        home.save_session(server, None).expect("forget");
        let err = token(&home, "production", Timestamp::now(), None).expect_err("no session");
        let report = ui::render_error(&err, false);
        assert_eq!(
            report,
            "error: your Infra session on 127.0.0.1:9 has ended\n\
             hint: run `infra login 127.0.0.1:9`, then run your kubectl command again\n"
        );
    }
}
