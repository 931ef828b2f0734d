//! A throwaway PostgreSQL 15 server for tests: in a temporary folder, listening only on a Unix
//! socket there, run as `nobody` when the tests run as root (PostgreSQL refuses root). If it
//! cannot start, the test fails and says why; it never skips.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// A PostgreSQL server in a temporary folder, listening only on a Unix socket there.
/// Stopped when dropped.
pub struct Server {
    dir: tempfile::TempDir,
    child: Child,
    as_user: Option<&'static str>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// Where a PostgreSQL program is: on `PATH`, or in Debian's versioned folder.
fn find(program: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            let mut found: Vec<_> = dirs
                .filter_map(Result::ok)
                .map(|d| d.path().join("bin").join(program))
                .collect();
            found.sort();
            found.reverse();
            found
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(debian)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's `{program}` is neither on PATH nor in /usr/lib/postgresql/*/bin; \
             install PostgreSQL 15 (Debian: apt-get install postgresql-15) to run this test"
            )
        })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Server {
    /// Starts a server, or panics saying why it could not.
    pub fn start() -> Self {
        let initdb = find("initdb");
        let postgres = find("postgres");
        let dir = tempfile::Builder::new()
            .prefix("infra-pg-")
            .tempdir()
            .expect("temp dir");
        let as_user = running_as_root().then_some("nobody");
        if let Some(user) = as_user {
            // PostgreSQL refuses to run as root: hand the folder to an unprivileged user.
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown {user} {} failed",
                dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let init_log = dir.path().join("initdb.log");
        let out = Self::command(as_user, &initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .env("LC_ALL", "C")
            .output()
            .expect("run initdb");
        if !out.status.success() {
            std::fs::write(&init_log, &out.stderr).ok();
            panic!(
                "cannot start PostgreSQL: initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        let child = Self::command(as_user, &postgres)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut server = Self {
            dir,
            child,
            as_user,
        };
        server.wait_ready();
        server
    }

    fn command(as_user: Option<&str>, program: &Path) -> Command {
        match as_user {
            Some(user)
                if Path::new("/usr/sbin/runuser").exists()
                    || Path::new("/sbin/runuser").exists() =>
            {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            Some(user) => {
                // `su -c` takes one shell line; the program path has no spaces.
                let mut c = Command::new("su");
                c.args(["-s", "/bin/sh", user, "-c"])
                    .arg(format!("exec {} \"$@\"", program.display()))
                    .arg("--");
                c
            }
            None => Command::new(program),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_mins(1);
        let socket = self.dir.path().join(".s.PGSQL.5432");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "cannot start PostgreSQL: it exited ({status}):\n{}",
                    self.log()
                );
            }
            if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                let url = self.url("postgres");
                let ok = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async { sqlx::PgConnection::connect(&url).await.is_ok() })
                })
                .join()
                .unwrap_or(false);
                if ok {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cannot start PostgreSQL: not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}",
            self.dir.path().display()
        )
    }

    /// Runs one statement in database `db`.
    pub async fn execute(&self, db: &str, sql: &'static str) {
        let mut conn = sqlx::PgConnection::connect(&self.url(db))
            .await
            .expect("connect");
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
        conn.close().await.expect("close");
    }

    /// Creates database `name`.
    pub async fn create_database(&self, name: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.expect("close");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pg_ctl = find("pg_ctl");
        let stopped = Self::command(self.as_user, &pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
