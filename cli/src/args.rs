//! The command line, as clap types. No logic lives here: each command's behaviour is in
//! `commands/`. Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Infra: access to Kubernetes clusters through your identity provider.
///
/// `infra login` signs you in and writes a kubeconfig context per cluster you may reach; after
/// that, kubectl just works. Exit codes: 0 success, 1 failure, 2 usage error.
#[derive(Debug, Parser)]
#[command(
    name = "infra",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Never prompt: a question that would need an answer is an error instead.
    #[arg(long, global = true, env = "INFRA_NON_INTERACTIVE")]
    pub non_interactive: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to an Infra server and write a kubeconfig context per destination you may reach.
    Login(LoginArgs),
    /// Log out: revoke the session on the server and remove Infra's kubeconfig entries.
    Logout(LogoutArgs),
    /// List the destinations you may reach, and your access to each.
    List(ListArgs),
    /// Switch the kubectl context to a destination (and namespace): `infra use production.web`.
    Use(UseArgs),
    /// Give, take away and list access: who (user or group) x role x resource.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Manage local users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage groups and their members.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Manage access keys (for scripts and CI).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage destinations: the clusters whose infra-proxy registered with this server.
    #[command(subcommand)]
    Destinations(DestinationsCommand),
    /// Manage identity providers (OpenID Connect).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Ask for access for a while: `infra request production.web --role edit --for 2h --reason
    /// "INC-1234" --wait`. A request rule must cover it; its reviewers approve it.
    Request(RequestArgs),
    /// List, review, cancel and revoke access requests.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Show who you are logged in as.
    Whoami(WhoamiArgs),
    /// Explain a decision: may USER do VERB on RESOURCE, and which grant and role rule decide it
    /// (`infra why suzie delete pods web-1 -n web`). Needs role view on infra.
    Why(WhyArgs),
    /// Search and follow the audit trail: who did what, where, when, and which grant allowed
    /// it (`infra audit --user suzie --since 1h --denied`). Needs role auditor, view or admin
    /// on infra.
    Audit(AuditArgs),
    /// Show the client's and the server's version.
    Version(VersionArgs),
    /// Print a shell completion script: `infra completion bash > /etc/bash_completion.d/infra`.
    Completion(CompletionArgs),
    /// The kubectl credential plugin: print an ExecCredential with a short-lived token.
    ///
    /// kubectl runs this through the `exec` user that `infra login` writes; you do not need to.
    Tokens(TokensArgs),
}

/// How list commands print their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON, stable for scripts.
    Json,
    /// YAML, the same data as JSON.
    Yaml,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table, env = "INFRA_OUTPUT")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server, `HOST[:PORT]` or `https://HOST[:PORT]`; without it, pick a saved one.
    #[arg(env = "INFRA_SERVER")]
    pub server: Option<String>,

    /// Trust the server's certificate if it is, or is signed by, the certificate in this PEM file.
    #[arg(long, value_name = "FILE", env = "INFRA_TLS_TRUSTED_CERT")]
    pub tls_trusted_cert: Option<PathBuf>,

    /// Trust the server's certificate if its SHA-256 fingerprint is this (hex, colons optional).
    #[arg(long, value_name = "SHA256", env = "INFRA_TLS_TRUSTED_FINGERPRINT")]
    pub tls_trusted_fingerprint: Option<String>,

    /// DANGER: do not verify the server's certificate at all. Anyone on the network path can
    /// then impersonate the server and capture your password or session. Only for throwaway
    /// test setups.
    #[arg(long, env = "INFRA_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,

    /// Log in with this identity provider (by name), in the browser.
    #[arg(long, env = "INFRA_PROVIDER", conflicts_with_all = ["user", "key"])]
    pub provider: Option<String>,

    /// Log in as this local user; the password comes from INFRA_PASSWORD, --password-stdin or a
    /// prompt.
    #[arg(long, env = "INFRA_USER", conflicts_with = "key")]
    pub user: Option<String>,

    /// Read the password from the first line of standard input.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,

    /// Log in with an access key (`ID.SECRET`). Prefer INFRA_ACCESS_KEY: a flag shows in `ps`.
    #[arg(long, env = "INFRA_ACCESS_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// Print the identity provider's URL instead of opening a browser.
    #[arg(long, env = "INFRA_NO_BROWSER")]
    pub no_browser: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Log out of every saved server, not only the current one.
    #[arg(long)]
    pub all: bool,
    /// Also forget the server(s): address and trusted certificate.
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The user.
    pub user: String,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection, ...
    pub verb: String,
    /// The resource as kubectl names it (pods, deployments.apps, pods/exec) or a non-resource
    /// URL (/healthz).
    pub resource: String,
    /// The object's name.
    pub name: Option<String>,
    /// The namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The destination (needed when several are registered).
    #[arg(short, long)]
    pub destination: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this user's events (or the control-plane actor's).
    #[arg(long, env = "INFRA_AUDIT_USER")]
    pub user: Option<String>,
    /// Only events of members of this group.
    #[arg(long, env = "INFRA_AUDIT_GROUP")]
    pub group: Option<String>,
    /// Only this destination's events.
    #[arg(short, long, env = "INFRA_AUDIT_DESTINATION")]
    pub destination: Option<String>,
    /// Only this namespace.
    #[arg(short, long, env = "INFRA_AUDIT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this verb (get, list, delete, ...) or control-plane action (grant.create, ...).
    #[arg(long, env = "INFRA_AUDIT_VERB")]
    pub verb: Option<String>,
    /// Only this resource (pods, secrets, ...).
    #[arg(long, env = "INFRA_AUDIT_RESOURCE")]
    pub resource: Option<String>,
    /// Only this object name (or control-plane target).
    #[arg(long, env = "INFRA_AUDIT_NAME")]
    pub name: Option<String>,
    /// Only denied requests (decision deny).
    #[arg(long, env = "INFRA_AUDIT_DENIED")]
    pub denied: bool,
    /// Only events of this kind: request, login, token, session, change, policy.
    #[arg(long, env = "INFRA_AUDIT_KIND")]
    pub kind: Option<String>,
    /// Only events whose reason, grant or detail contains this text (any case).
    #[arg(short = 'q', long, env = "INFRA_AUDIT_GREP")]
    pub grep: Option<String>,
    /// From this long ago (`30m`, `1h`, `7d`) or this time (RFC 3339).
    #[arg(long, env = "INFRA_AUDIT_SINCE")]
    pub since: Option<String>,
    /// Up to this long ago (`30m`) or this time (RFC 3339).
    #[arg(long, env = "INFRA_AUDIT_UNTIL")]
    pub until: Option<String>,
    /// At most this many events (the newest), printed oldest first.
    #[arg(long, default_value_t = 100, env = "INFRA_AUDIT_LIMIT")]
    pub limit: usize,
    /// Keep printing new events as they arrive (Ctrl-C to stop).
    #[arg(short, long, env = "INFRA_AUDIT_FOLLOW")]
    pub follow: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// `DESTINATION` or `DESTINATION.NAMESPACE`.
    pub destination: String,
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Grant a role on a resource to a user or (with -g) a group.
    ///
    /// `infra grants add suzie@example.com production --role admin --for 1h`,
    /// `infra grants add -g Engineering production.web --role edit`.
    Add(GrantArgs),
    /// Remove the grants of a user or group on a resource (only those of --role, if given).
    Remove(GrantRemoveArgs),
    /// List grants.
    List(GrantsListArgs),
}

#[derive(Debug, Args)]
pub struct GrantSubject {
    /// A group instead of a user: `-g GROUP RESOURCE`.
    #[arg(short, long)]
    pub group: Option<String>,
    /// `USER RESOURCE`, or only `RESOURCE` with -g. A resource is `DESTINATION`,
    /// `DESTINATION.NAMESPACE`, or `infra` (the control API itself).
    #[arg(value_name = "USER|RESOURCE", required = true, num_args = 1..=2)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub subject: GrantSubject,
    /// The role: view, edit, admin, cluster-admin, or a ClusterRole of the cluster.
    #[arg(short, long)]
    pub role: String,
    /// Let the grant expire after this long: `30m`, `1h`, `2h30m`, `7d`.
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub for_: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct GrantRemoveArgs {
    #[command(flatten)]
    pub subject: GrantSubject,
    /// Only the grant of this role.
    #[arg(short, long)]
    pub role: Option<String>,
}

#[derive(Debug, Args)]
pub struct GrantsListArgs {
    /// Only the grants of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only the grants of this group.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Only grants on this resource.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only grants on this destination (any namespace).
    #[arg(long)]
    pub destination: Option<String>,
    /// Only grants of this role.
    #[arg(long)]
    pub role: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Where: `DESTINATION` or `DESTINATION.NAMESPACE`.
    pub resource: String,
    /// The role: view, edit, admin, or one the request rules name.
    #[arg(short, long)]
    pub role: String,
    /// For how long, once approved: `30m`, `2h`, `1d`.
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub for_: std::time::Duration,
    /// Why (an incident or a ticket), for the reviewers and the audit trail.
    #[arg(long)]
    pub reason: String,
    /// Wait until the request is decided; once approved, kubectl works (the kubeconfig context
    /// is added if it was missing).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List your requests; `--pending` the requests waiting for your review; `--all` every
    /// request (role view on infra).
    List(RequestsListArgs),
    /// Show one request with its reviews.
    Show(RequestIdArgs),
    /// Approve a request you review.
    Approve(RequestReviewArgs),
    /// Deny a request you review (say why with --comment).
    Deny(RequestReviewArgs),
    /// Take back your pending request.
    Cancel(RequestReviewArgs),
    /// End an approved request's access now.
    Revoke(RequestReviewArgs),
    /// List the request rules: who may ask for what, for how long, and who approves.
    Rules(RulesListArgs),
}

#[derive(Debug, Args)]
pub struct RequestsListArgs {
    /// The requests waiting for your review.
    #[arg(long, conflicts_with = "all")]
    pub pending: bool,
    /// Every request (role view on infra).
    #[arg(long)]
    pub all: bool,
    /// Only requests in this state: pending, approved, denied, cancelled, expired, ended.
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RequestIdArgs {
    /// The request's id.
    pub id: i64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RequestReviewArgs {
    /// The request's id.
    pub id: i64,
    /// What you say (required to deny).
    #[arg(long, short = 'm')]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct RulesListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a local user.
    Add(UserPasswordArgs),
    /// Change a local user's password.
    Edit(UserPasswordArgs),
    /// Remove a user.
    Remove(NameArg),
    /// List users.
    List(NameFilterArgs),
    /// Forget every counted failed login of a user, from every address (an audited unlock).
    Unlock(NameArg),
    /// Link an identity provider's person (its subject, `sub`) to a user: their logins through
    /// that provider are this user from now on.
    Link(LinkArgs),
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The user's name.
    pub name: String,
    /// The identity provider's name in Infra.
    #[arg(long, env = "INFRA_LINK_PROVIDER")]
    pub provider: String,
    /// The subject the provider gives the person (the refused login's message names it).
    #[arg(long, env = "INFRA_LINK_SUBJECT")]
    pub subject: String,
}

#[derive(Debug, Args)]
pub struct UserPasswordArgs {
    /// The user's name, usually an email address.
    pub name: String,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "prompt_password")]
    pub password_stdin: bool,
    /// Ask for the password (twice) on the terminal.
    #[arg(long)]
    pub prompt_password: bool,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NameFilterArgs {
    /// Only this name.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Add a group.
    Add(NameArg),
    /// Remove a group.
    Remove(NameArg),
    /// List groups.
    List(NameFilterArgs),
    /// Add a user to a group: `infra groups adduser USER GROUP`.
    Adduser(MemberArgs),
    /// Remove a user from a group: `infra groups removeuser USER GROUP`.
    Removeuser(MemberArgs),
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    pub user: String,
    pub group: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an access key; it is printed once, on standard output.
    Add(KeyAddArgs),
    /// List access keys (yours, or --user's).
    List(KeysListArgs),
    /// Remove an access key, by id or by name.
    Remove(KeyRemoveArgs),
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// A name for the key.
    pub name: String,
    /// Whose key (admins only); yours by default.
    #[arg(long)]
    pub user: Option<String>,
    /// The key stops working after this long: `24h`, `30d`.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub expires_in: Option<std::time::Duration>,
    /// The key stops working when unused for this long.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub inactivity_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct KeysListArgs {
    /// Whose keys; yours by default.
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The key's id or name.
    pub key: String,
    /// Whose key, when naming it by name; yours by default.
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// List destinations.
    List(ListArgs),
    /// Remove a destination.
    Remove(NameArg),
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Add an OpenID Connect identity provider.
    Add(ProviderAddArgs),
    /// Change an identity provider.
    Edit(ProviderEditArgs),
    /// List identity providers.
    List(ListArgs),
    /// Remove an identity provider.
    Remove(NameArg),
}

/// The kinds of identity provider the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    Oidc,
    Okta,
    Azure,
    Google,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
            ProviderKind::Okta => "okta",
            ProviderKind::Azure => "azure",
            ProviderKind::Google => "google",
        }
    }
}

#[derive(Debug, Args)]
pub struct ProviderAddArgs {
    /// The provider's name, shown on the login screen.
    pub name: String,
    /// The issuer URL, e.g. `https://acme.okta.com`.
    #[arg(long)]
    pub url: String,
    /// The OAuth client id.
    #[arg(long)]
    pub client_id: String,
    /// The OAuth client secret. Prefer --client-secret-stdin or INFRA_PROVIDER_CLIENT_SECRET.
    #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Read the client secret from the first line of standard input.
    #[arg(long, conflicts_with = "client_secret")]
    pub client_secret_stdin: bool,
    /// The kind of provider.
    #[arg(long, value_enum, default_value_t = ProviderKind::Oidc)]
    pub kind: ProviderKind,
    /// Scopes to ask for (repeat or comma-separate); the server's default without it.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProviderEditArgs {
    /// The provider to change.
    pub name: String,
    /// A new issuer URL.
    #[arg(long)]
    pub url: Option<String>,
    /// A new OAuth client id.
    #[arg(long)]
    pub client_id: Option<String>,
    /// A new OAuth client secret. Prefer --client-secret-stdin or INFRA_PROVIDER_CLIENT_SECRET.
    #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Read a new client secret from the first line of standard input.
    #[arg(long, conflicts_with = "client_secret")]
    pub client_secret_stdin: bool,
    /// A new kind.
    #[arg(long, value_enum)]
    pub kind: Option<ProviderKind>,
    /// New scopes (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    /// The destination whose token to print.
    #[arg(long)]
    pub destination: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn grants_add_takes_user_and_resource_or_group_and_resource() {
        let cli = Cli::try_parse_from([
            "infra",
            "grants",
            "add",
            "suzie@example.com",
            "production",
            "--role",
            "admin",
            "--for",
            "1h",
        ])
        .expect("parses");
        let Command::Grants(GrantsCommand::Add(add)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(add.subject.names, ["suzie@example.com", "production"]);
        assert_eq!(add.for_, Some(std::time::Duration::from_hours(1)));

        let cli = Cli::try_parse_from([
            "infra",
            "grants",
            "add",
            "-g",
            "Engineering",
            "production.web",
            "--role",
            "edit",
        ])
        .expect("parses");
        let Command::Grants(GrantsCommand::Add(add)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(add.subject.group.as_deref(), Some("Engineering"));
        assert_eq!(add.subject.names, ["production.web"]);
    }

    #[test]
    fn every_list_takes_output() {
        for args in [
            &["infra", "list", "-o", "json"][..],
            &["infra", "grants", "list", "--output", "yaml"],
            &["infra", "users", "list", "-o", "json"],
            &["infra", "groups", "list", "-o", "json"],
            &["infra", "keys", "list", "-o", "json"],
            &["infra", "destinations", "list", "-o", "json"],
            &["infra", "providers", "list", "-o", "json"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
