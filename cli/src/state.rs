//! Infra's local state in `~/.infra` (or `$INFRA_HOME`), a folder of mode 0700 with files of mode
//! 0600:
//!
//! - `config.json`: the saved servers, how each one's certificate is trusted, the current server,
//!   and which server each destination in the kubeconfig came from. No secrets.
//! - `sessions.json`: the session access key per server.
//! - `tokens/`: the cached destination tokens of the credential plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::files;

/// How the CLI decides that it talks to the right server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trust {
    /// The system's certificate authorities, with the host name checked.
    System,
    /// These certificates (PEM) as the only roots, with the host name checked.
    Certificate { pem: String },
    /// Exactly the certificate with this SHA-256 fingerprint (lower-case hex, no colons); the
    /// host name is not checked. `pem` is the certificate the user accepted, when known.
    Fingerprint {
        sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pem: Option<String>,
    },
    /// No verification at all (`--insecure-skip-tls-verify`).
    InsecureSkipVerify,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// `https://host:port`, without a trailing slash.
    pub url: String,
    pub trust: Trust,
    /// Who last logged in there.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The server that commands talk to.
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub servers: Vec<Server>,
    /// destination -> the URL of the server it came from.
    #[serde(default)]
    pub destinations: BTreeMap<String, String>,
}

impl Config {
    pub fn server(&self, url: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.url == url)
    }

    /// Adds or replaces a server.
    pub fn put_server(&mut self, server: Server) {
        match self.servers.iter_mut().find(|s| s.url == server.url) {
            Some(slot) => *slot = server,
            None => self.servers.push(server),
        }
    }

    pub fn current_server(&self) -> Result<&Server> {
        let url = self.current.as_deref().ok_or_else(|| {
            crate::ui::hint(
                anyhow!("not logged in to any Infra server"),
                "run `infra login SERVER`",
            )
        })?;
        self.server(url)
            .with_context(|| format!("the current server {url} is not among the saved servers"))
    }

    /// Records the destinations that came from `server`, replacing its previous ones.
    pub fn set_destinations<'a>(
        &mut self,
        server: &str,
        destinations: impl IntoIterator<Item = &'a str>,
    ) {
        self.destinations.retain(|_, s| s != server);
        for d in destinations {
            self.destinations.insert(d.to_owned(), server.to_owned());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    /// `<id>.<secret>`.
    pub access_key: String,
    #[serde(default)]
    pub expires_at: Option<jiff::Timestamp>,
}

/// A destination token cached for the credential plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    pub token: String,
    pub expires_at: jiff::Timestamp,
    /// The process (kubectl) the token was last handed to. The same process asking again means
    /// the server refused the token (a 401 makes kubectl run the plugin again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_to: Option<u32>,
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `$INFRA_HOME`, or `~/.infra`.
    pub fn locate() -> Result<Home> {
        if let Some(dir) = std::env::var_os("INFRA_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::at(PathBuf::from(dir)));
        }
        let home = std::env::home_dir()
            .filter(|h| !h.as_os_str().is_empty())
            .ok_or_else(|| anyhow!("cannot tell your home folder; set INFRA_HOME"))?;
        Ok(Home::at(home.join(".infra")))
    }

    pub fn at(dir: PathBuf) -> Home {
        Home { dir }
    }

    #[cfg(test)]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn ensure(&self) -> Result<()> {
        files::private_dir(&self.dir)
    }

    fn read_json<T: for<'de> Deserialize<'de> + Default>(&self, name: &str) -> Result<T> {
        let path = self.dir.join(name);
        match files::read_optional(&path)? {
            None => Ok(T::default()),
            Some(text) => serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()))
                .hint(format!(
                    "the file is Infra's own; remove it and run `infra login` again: rm {}",
                    path.display()
                )),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        self.ensure()?;
        let mut text = serde_json::to_vec_pretty(value).context("encoding state")?;
        text.push(b'\n');
        files::write_private(&self.dir.join(name), &text)
    }

    pub fn config(&self) -> Result<Config> {
        self.read_json("config.json")
    }

    pub fn save_config(&self, config: &Config) -> Result<()> {
        self.write_json("config.json", config)
    }

    pub fn sessions(&self) -> Result<BTreeMap<String, Session>> {
        self.read_json("sessions.json")
    }

    pub fn session(&self, server: &str) -> Result<Option<Session>> {
        Ok(self.sessions()?.remove(server))
    }

    pub fn save_session(&self, server: &str, session: Option<Session>) -> Result<()> {
        let _lock = self.lock()?;
        let mut sessions = self.sessions()?;
        match session {
            Some(s) => sessions.insert(server.to_owned(), s),
            None => sessions.remove(server),
        };
        self.write_json("sessions.json", &sessions)
    }

    fn lock(&self) -> Result<files::Lock> {
        self.ensure()?;
        files::Lock::acquire(&self.dir.join("sessions.json"))
    }

    fn token_path(&self, server: &str, destination: &str) -> PathBuf {
        use sha2::Digest;
        let server_id = hex::encode(&sha2::Sha256::digest(server.as_bytes())[..8]);
        self.dir
            .join("tokens")
            .join(format!("{server_id}-{destination}.json"))
    }

    pub fn cached_token(&self, server: &str, destination: &str) -> Option<CachedToken> {
        let text = files::read_optional(&self.token_path(server, destination)).ok()??;
        serde_json::from_str(&text).ok()
    }

    pub fn save_token(&self, server: &str, destination: &str, token: &CachedToken) -> Result<()> {
        let path = self.token_path(server, destination);
        if let Some(dir) = path.parent() {
            files::private_dir(dir)?;
        }
        let text = serde_json::to_vec(token).context("encoding the token cache")?;
        files::write_private(&path, &text)
    }

    /// Forgets every cached token of `server`.
    pub fn clear_tokens(&self, server: &str) -> Result<()> {
        let Some(prefix) = self
            .token_path(server, "")
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".json").to_owned())
        else {
            return Ok(());
        };
        let dir = self.dir.join("tokens");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }
}

use crate::ui::HintExt;

/// Turns what the user typed (`host`, `host:port`, `https://host:port/`) into `https://host:port`.
pub fn normalize_server(input: &str) -> Result<String> {
    let input = input.trim();
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("https://{input}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| crate::ui::usage(format!("{input:?} is not a server address: {e}")))?;
    if url.scheme() != "https" {
        return Err(crate::ui::usage(format!(
            "{input:?}: Infra servers are reached over https only"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| crate::ui::usage(format!("{input:?} names no host")))?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err(crate::ui::usage(format!(
            "{input:?}: give the server as HOST[:PORT], without a path"
        )));
    }
    let port = url.port().unwrap_or(443);
    Ok(format!("https://{host}:{port}"))
}

/// `host:port` for showing a server to people.
pub fn display_server(url: &str) -> &str {
    url.strip_prefix("https://").unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn server_addresses_are_normalized() {
        assert_eq!(
            normalize_server("infra.example.com").expect("ok"),
            "https://infra.example.com:443"
        );
        assert_eq!(
            normalize_server("https://127.0.0.1:8443/").expect("ok"),
            "https://127.0.0.1:8443"
        );
        assert_eq!(
            normalize_server("[::1]:9000").expect("ok"),
            "https://[::1]:9000"
        );
        assert!(normalize_server("http://infra.example.com").is_err());
        assert!(normalize_server("infra.example.com/api").is_err());
    }

    #[test]
    fn state_round_trips_with_private_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::at(dir.path().join(".infra"));
        assert_eq!(home.config().expect("empty"), Config::default());

        let mut config = Config::default();
        config.put_server(Server {
            url: "https://infra.example.com:443".into(),
            trust: Trust::Fingerprint {
                sha256: "ab".repeat(32),
                pem: None,
            },
            user: Some("suzie@example.com".into()),
        });
        config.current = Some("https://infra.example.com:443".into());
        config.set_destinations("https://infra.example.com:443", ["production", "staging"]);
        home.save_config(&config).expect("save");
        assert_eq!(home.config().expect("load"), config);

        let session = Session {
            user: "suzie@example.com".into(),
            access_key: "abc.def".into(),
            expires_at: None,
        };
        home.save_session("https://infra.example.com:443", Some(session.clone()))
            .expect("save");
        assert_eq!(
            home.session("https://infra.example.com:443").expect("load"),
            Some(session)
        );

        let token = CachedToken {
            token: "jwt".into(),
            expires_at: jiff::Timestamp::from_second(2_000_000_000).expect("ts"),
            handed_to: Some(42),
        };
        home.save_token("https://infra.example.com:443", "production", &token)
            .expect("save");
        assert_eq!(
            home.cached_token("https://infra.example.com:443", "production"),
            Some(token)
        );
        assert_eq!(
            home.cached_token("https://other.example.com:443", "production"),
            None
        );

        let dir_mode = std::fs::metadata(home.dir()).expect("stat").permissions();
        assert_eq!(dir_mode.mode() & 0o777, 0o700);
        for name in ["config.json", "sessions.json"] {
            let mode = std::fs::metadata(home.dir().join(name))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        home.clear_tokens("https://infra.example.com:443")
            .expect("clear");
        assert_eq!(
            home.cached_token("https://infra.example.com:443", "production"),
            None
        );
    }
}
