//! Infra's entries in the user's kubeconfig.
//!
//! Per destination: a cluster, a context and a user, each named `infra:<destination>`. The user is
//! an exec credential plugin (this binary's `tokens --destination <destination>`), so the file
//! never holds a secret. Everything else in the file (other entries, unknown fields) is left as
//! it was. `current-context` is changed by `infra use`, and by a sync only when it names no
//! context at all (unset, or a context that is gone): then it becomes Infra's first context, so
//! kubectl works after `infra login` without talking to `localhost:8080`.
//!
//! The file is the first of `KUBECONFIG`, or `~/.kube/config`. Every change takes an exclusive
//! lock on `<file>.infra.lock`, reads, edits, and replaces the file atomically with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::files;

/// The prefix of every name Infra writes.
pub const PREFIX: &str = "infra:";

/// The kubeconfig file to write: the first of `KUBECONFIG`, or `~/.kube/config`.
pub fn path() -> Result<PathBuf> {
    path_from(std::env::var_os("KUBECONFIG"), std::env::home_dir())
}

fn path_from(kubeconfig: Option<std::ffi::OsString>, home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(list) = kubeconfig
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = home
        .filter(|h| !h.as_os_str().is_empty())
        .ok_or_else(|| anyhow!("cannot tell your home folder; set KUBECONFIG"))?;
    Ok(home.join(".kube").join("config"))
}

/// A kubeconfig, with every field Infra does not know kept as it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<Named>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<Named>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<Named>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `clusters`, `contexts` or `users` entry: its name and the rest, untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Named>, D::Error> {
    Ok(Option::<Vec<Named>>::deserialize(d)?.unwrap_or_default())
}

/// What Infra writes for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    /// The proxy's URL.
    pub url: String,
    /// The proxy's CA certificate(s), PEM; none to use the system's.
    pub ca_pem: Option<String>,
    /// The namespace a new context starts in: set when the user may reach only namespaces.
    pub namespace: Option<String>,
}

/// What a sync changed, for messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The context made current because none was (or the current one was gone).
    pub current: Option<String>,
}

impl Kubeconfig {
    pub fn parse(text: &str) -> Result<Kubeconfig> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        Ok(serde_saphyr::from_str(text)?)
    }

    pub fn render(&self) -> Result<String> {
        Ok(serde_saphyr::to_string(self)?)
    }

    fn entry_name(destination: &str) -> String {
        format!("{PREFIX}{destination}")
    }

    /// The destinations Infra has entries for (by context, cluster or user).
    pub fn infra_destinations(&self) -> Vec<String> {
        let mut names: Vec<String> = [&self.clusters, &self.contexts, &self.users]
            .into_iter()
            .flatten()
            .filter_map(|e| e.name.strip_prefix(PREFIX).map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Writes the entries of `destinations`, and removes Infra's entries of destinations that
    /// are not among them unless `keep` says they belong elsewhere (another server).
    pub fn sync(
        &mut self,
        exe: &Path,
        destinations: &[Destination],
        keep: &dyn Fn(&str) -> bool,
    ) -> Changes {
        let before = self.infra_destinations();
        let stale: Vec<String> = before
            .iter()
            .filter(|d| !destinations.iter().any(|n| &n.name == *d) && !keep(d))
            .cloned()
            .collect();
        self.remove(&stale);
        for d in destinations {
            self.put(exe, d);
        }
        let names_nothing = self
            .current_context
            .as_ref()
            .is_none_or(|c| !self.contexts.iter().any(|e| &e.name == c));
        let current = match destinations.first() {
            Some(first) if names_nothing => {
                let name = Self::entry_name(&first.name);
                self.current_context = Some(name.clone());
                Some(name)
            }
            _ => None,
        };
        Changes {
            current,
            added: destinations
                .iter()
                .filter(|d| !before.contains(&d.name))
                .map(|d| d.name.clone())
                .collect(),
            removed: stale,
        }
    }

    fn put(&mut self, exe: &Path, d: &Destination) {
        let name = Self::entry_name(&d.name);
        let mut cluster = json!({ "server": d.url });
        if let Some(ca) = d.ca_pem.as_deref().filter(|ca| !ca.trim().is_empty()) {
            cluster["certificate-authority-data"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        upsert(&mut self.clusters, &name, "cluster", |old| {
            // Keep fields the user added (proxy-url, tls-server-name, extensions).
            let mut merged = old.and_then(Value::as_object).cloned().unwrap_or_default();
            merged.remove("certificate-authority");
            merged.remove("certificate-authority-data");
            merged.remove("insecure-skip-tls-verify");
            if let Value::Object(new) = cluster {
                merged.extend(new);
            }
            Value::Object(merged)
        });
        let exec = json!({
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": exe.to_string_lossy(),
                "args": ["tokens", "--destination", d.name],
                "interactiveMode": "IfAvailable",
                "provideClusterInfo": false,
            }
        });
        upsert(&mut self.users, &name, "user", |_| exec);
        upsert(&mut self.contexts, &name, "context", |old| {
            let mut context = old.and_then(Value::as_object).cloned().unwrap_or_default();
            let fresh = !context.contains_key("cluster");
            context.insert("cluster".into(), Value::String(name.clone()));
            context.insert("user".into(), Value::String(name.clone()));
            if fresh && let Some(ns) = &d.namespace {
                context.insert("namespace".into(), Value::String(ns.clone()));
            }
            Value::Object(context)
        });
    }

    /// Removes Infra's entries of these destinations. A `current-context` that named one of them
    /// is cleared, since it would name nothing.
    pub fn remove(&mut self, destinations: &[String]) {
        let names: Vec<String> = destinations.iter().map(|d| Self::entry_name(d)).collect();
        for list in [&mut self.clusters, &mut self.contexts, &mut self.users] {
            list.retain(|e| !names.contains(&e.name));
        }
        if self
            .current_context
            .as_ref()
            .is_some_and(|c| names.contains(c))
        {
            self.current_context = None;
        }
    }

    /// Makes `infra:<destination>` the current context, in `namespace` (none: the context's
    /// namespace is removed, so kubectl uses `default`).
    pub fn use_context(&mut self, destination: &str, namespace: Option<&str>) -> Result<()> {
        let name = Self::entry_name(destination);
        let entry = self
            .contexts
            .iter_mut()
            .find(|e| e.name == name)
            .with_context(|| format!("the kubeconfig has no context {name}"))?;
        let context = entry
            .rest
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(context) = context else {
            return Err(anyhow!("the kubeconfig's context {name} is not a mapping"));
        };
        match namespace {
            Some(ns) => context.insert("namespace".into(), Value::String(ns.to_owned())),
            None => context.remove("namespace"),
        };
        self.current_context = Some(name);
        Ok(())
    }
}

fn upsert(
    list: &mut Vec<Named>,
    name: &str,
    key: &str,
    make: impl FnOnce(Option<&Value>) -> Value,
) {
    if let Some(entry) = list.iter_mut().find(|e| e.name == name) {
        let value = make(entry.rest.get(key));
        entry.rest.insert(key.to_owned(), value);
    } else {
        let mut rest = Map::new();
        rest.insert(key.to_owned(), make(None));
        list.push(Named {
            name: name.to_owned(),
            rest,
        });
    }
}

/// Edits the kubeconfig at `path` under its lock: read (a missing file is empty), change, and
/// write back atomically with mode 0600 if anything changed.
pub fn edit<T>(path: &Path, change: impl FnOnce(&mut Kubeconfig) -> Result<T>) -> Result<T> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _lock = files::Lock::acquire(path)?;
    let before = match files::read_optional(path)? {
        Some(text) => Kubeconfig::parse(&text)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        None => Kubeconfig::default(),
    };
    let mut config = before.clone();
    let result = change(&mut config)?;
    if config != before {
        config.api_version.get_or_insert_with(|| "v1".to_owned());
        config.kind.get_or_insert_with(|| "Config".to_owned());
        let text = config
            .render()
            .with_context(|| format!("encoding the kubeconfig {}", path.display()))?;
        files::write_private(path, text.as_bytes())?;
    }
    Ok(result)
}

/// This binary's absolute path, for the exec plugin entries.
pub fn current_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the path of the infra binary")?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const USERS_OWN: &str = "\
apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: kind-dev
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Zm9v
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: dev}
contexts:
- name: kind-dev
  context:
    cluster: kind-dev
    user: kind-dev
users:
- name: kind-dev
  user:
    token: not-ours
current-context: kind-dev
";

    fn dest(name: &str, namespace: Option<&str>) -> Destination {
        Destination {
            name: name.into(),
            url: format!("https://{name}.example.com:8443"),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            namespace: namespace.map(str::to_owned),
        }
    }

    fn exe() -> PathBuf {
        PathBuf::from("/usr/local/bin/infra")
    }

    fn never(_: &str) -> bool {
        false
    }

    #[test]
    fn sync_writes_cluster_context_and_exec_user_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, USERS_OWN).expect("write");

        let changes = edit(&path, |kc| {
            Ok(kc.sync(
                &exe(),
                &[dest("production", None), dest("staging", Some("web"))],
                &never,
            ))
        })
        .expect("sync");
        assert_eq!(changes.added, ["production", "staging"]);
        assert!(changes.removed.is_empty());

        let text = std::fs::read_to_string(&path).expect("read");
        let kc = Kubeconfig::parse(&text).expect("parse");
        assert_eq!(
            kc.current_context.as_deref(),
            Some("kind-dev"),
            "left alone"
        );
        assert_eq!(kc.extra["preferences"], json!({"colors": true}));
        let dev = &kc.clusters[0];
        assert_eq!(dev.name, "kind-dev");
        assert_eq!(
            dev.rest["cluster"]["extensions"][0]["extension"]["audience"], "dev",
            "unknown fields survive"
        );
        assert_eq!(kc.users[0].rest["user"]["token"], "not-ours");

        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == "infra:production")
            .expect("cluster");
        assert_eq!(
            cluster.rest["cluster"]["server"],
            "https://production.example.com:8443"
        );
        let ca = cluster.rest["cluster"]["certificate-authority-data"]
            .as_str()
            .expect("ca");
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("base64");
        assert!(
            String::from_utf8(ca)
                .expect("utf8")
                .contains("BEGIN CERTIFICATE")
        );

        let user = kc
            .users
            .iter()
            .find(|u| u.name == "infra:production")
            .expect("user");
        assert_eq!(
            user.rest["user"],
            json!({"exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "/usr/local/bin/infra",
                "args": ["tokens", "--destination", "production"],
                "interactiveMode": "IfAvailable",
                "provideClusterInfo": false,
            }}),
            "an exec plugin and no secret"
        );
        let context = kc
            .contexts
            .iter()
            .find(|c| c.name == "infra:staging")
            .expect("context");
        assert_eq!(
            context.rest["context"],
            json!({"cluster": "infra:staging", "user": "infra:staging", "namespace": "web"})
        );

        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn sync_removes_destinations_no_longer_reached_but_not_other_servers() {
        let mut kc = Kubeconfig::parse(USERS_OWN).expect("parse");
        kc.sync(
            &exe(),
            &[
                dest("production", None),
                dest("staging", None),
                dest("eu", None),
            ],
            &never,
        );
        kc.use_context("staging", None).expect("use");

        let changes = kc.sync(&exe(), &[dest("production", None)], &|d| d == "eu");
        assert_eq!(changes.removed, ["staging"]);
        assert!(changes.added.is_empty());
        assert_eq!(kc.infra_destinations(), ["eu", "production"]);
        assert_eq!(
            kc.current_context.as_deref(),
            Some("infra:production"),
            "the removed context is no longer current: Infra's first one is"
        );
        assert_eq!(changes.current.as_deref(), Some("infra:production"));
        assert!(kc.clusters.iter().any(|c| c.name == "kind-dev"));
    }

    #[test]
    fn sync_makes_a_context_current_only_when_none_is() {
        // A fresh kubeconfig: after the first sync kubectl has somewhere to go.
        let mut kc = Kubeconfig::default();
        let changes = kc.sync(&exe(), &[dest("production", None)], &never);
        assert_eq!(kc.current_context.as_deref(), Some("infra:production"));
        assert_eq!(changes.current.as_deref(), Some("infra:production"));
        // The user's own current context stays.
        let mut kc = Kubeconfig::parse(USERS_OWN).expect("parse");
        let before = kc.current_context.clone();
        assert!(before.is_some());
        let changes = kc.sync(&exe(), &[dest("production", None)], &never);
        assert_eq!(kc.current_context, before);
        assert_eq!(changes.current, None);
        // No destination: nothing to make current.
        let mut kc = Kubeconfig::default();
        assert_eq!(kc.sync(&exe(), &[], &never).current, None);
        assert_eq!(kc.current_context, None);
    }

    #[test]
    fn sync_keeps_the_users_namespace_choice() {
        let mut kc = Kubeconfig::default();
        kc.sync(&exe(), &[dest("production", Some("web"))], &never);
        kc.use_context("production", Some("api")).expect("use");
        kc.sync(&exe(), &[dest("production", Some("web"))], &never);
        assert_eq!(kc.contexts[0].rest["context"]["namespace"], "api");
    }

    #[test]
    fn use_switches_context_and_namespace() {
        let mut kc = Kubeconfig::parse(USERS_OWN).expect("parse");
        kc.sync(&exe(), &[dest("production", None)], &never);
        kc.use_context("production", Some("web")).expect("use");
        assert_eq!(kc.current_context.as_deref(), Some("infra:production"));
        assert_eq!(kc.contexts[1].rest["context"]["namespace"], "web");
        kc.use_context("production", None).expect("use");
        assert!(kc.contexts[1].rest["context"].get("namespace").is_none());
        assert!(kc.use_context("nowhere", None).is_err());
    }

    #[test]
    fn logout_removes_all_of_infras_entries_only() {
        let mut kc = Kubeconfig::parse(USERS_OWN).expect("parse");
        kc.sync(
            &exe(),
            &[dest("production", None), dest("staging", None)],
            &never,
        );
        let all = kc.infra_destinations();
        kc.remove(&all);
        assert_eq!(kc, Kubeconfig::parse(USERS_OWN).expect("parse"));
    }

    #[test]
    fn a_missing_or_empty_or_null_listed_file_is_an_empty_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/kube/config");
        edit(&path, |kc| {
            assert_eq!(*kc, Kubeconfig::default());
            kc.sync(&exe(), &[dest("production", None)], &never);
            Ok(())
        })
        .expect("edit");
        let kc = Kubeconfig::parse(&std::fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(kc.api_version.as_deref(), Some("v1"));
        assert_eq!(kc.kind.as_deref(), Some("Config"));
        assert_eq!(kc.infra_destinations(), ["production"]);

        let kc = Kubeconfig::parse("apiVersion: v1\nclusters: null\nusers: null\n").expect("parse");
        assert!(kc.clusters.is_empty());
    }

    #[test]
    fn an_unchanged_config_is_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, USERS_OWN).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        edit(&path, |_| Ok(())).expect("edit");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), USERS_OWN);
    }

    #[test]
    fn concurrent_edits_take_turns_and_never_corrupt_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, USERS_OWN).expect("write");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        edit(&path, |kc| {
                            // Read-modify-write: each thread adds its own destinations.
                            let mut all: Vec<Destination> = kc
                                .infra_destinations()
                                .iter()
                                .map(|d| dest(d, None))
                                .collect();
                            all.push(dest(&format!("t{t}-{i}"), None));
                            kc.sync(&exe(), &all, &never);
                            Ok(())
                        })
                        .expect("edit");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let kc = Kubeconfig::parse(&std::fs::read_to_string(&path).expect("read")).expect("parse");
        assert_eq!(kc.infra_destinations().len(), 40, "no edit was lost");
    }

    #[test]
    fn the_file_is_the_first_of_kubeconfig_or_the_default() {
        let home = Some(PathBuf::from("/home/suzie"));
        let list = std::env::join_paths(["/tmp/a", "/tmp/b"]).expect("join");
        assert_eq!(
            path_from(Some(list), home.clone()).expect("path"),
            PathBuf::from("/tmp/a")
        );
        assert_eq!(
            path_from(Some(":/tmp/b".into()), home.clone()).expect("path"),
            PathBuf::from("/tmp/b")
        );
        assert_eq!(
            path_from(None, home).expect("path"),
            PathBuf::from("/home/suzie/.kube/config")
        );
    }
}
