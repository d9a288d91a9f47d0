//! A throwaway PostgreSQL cluster: initdb into a temporary folder, its own socket and port.
//!
//! Used by the drill, by verification and by the tests. The cluster listens on a Unix socket
//! in its own folder (and on loopback TCP only when asked), so clusters never collide. It is
//! stopped and its folder removed when the handle is dropped, whatever happened. PostgreSQL
//! refuses to run as root; when lifeboat runs as root the cluster runs as the `postgres` user
//! (else `nobody`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::tools::PgTools;

/// The superuser every scratch cluster is created with.
pub const SUPERUSER: &str = "lifeboat";

#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Also listen on 127.0.0.1 (TCP) and require this password there (scram-sha-256).
    pub tcp_password: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
    /// With `tcp_password`: TCP connections must use TLS (a self-signed certificate made with
    /// `openssl`; `hostssl` only in pg_hba.conf).
    pub tls: bool,
    /// Where the cluster's folder goes (`--work-dir`); unset: `$TMPDIR`.
    pub parent: Option<PathBuf>,
}

#[derive(Debug)]
pub struct ScratchCluster {
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    tools: PgTools,
    run_as: Option<(u32, u32)>,
    tcp: bool,
    /// The server, a watched child of lifeboat while it runs.
    server: Option<std::process::Child>,
}

impl ScratchCluster {
    pub fn start(tools: &PgTools, options: &ClusterOptions) -> Result<ScratchCluster> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("lifeboat-pg-");
        let dir = match &options.parent {
            Some(parent) => builder.tempdir_in(parent).map_err(|e| {
                Error::io(
                    format!(
                        "creating a folder for a scratch cluster in `{}` (--work-dir)",
                        parent.display()
                    ),
                    e,
                )
            })?,
            None => builder
                .tempdir()
                .map_err(|e| Error::io("creating a folder for a scratch cluster", e))?,
        };
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| Error::io("creating the scratch cluster's socket folder", e))?;
        let run_as = unprivileged_user();
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                    Error::io(
                        format!("handing `{}` to the postgres user", path.display()),
                        e,
                    )
                })?;
            }
        }
        let port = free_port()?;
        let mut cluster = ScratchCluster {
            dir: Some(dir),
            data,
            socket_dir,
            port,
            tools: tools.clone(),
            run_as,
            tcp: options.tcp_password.is_some(),
            server: None,
        };
        cluster.init(options)?;
        let mut server = spawn_server(
            &cluster.tools,
            &cluster.data,
            &cluster.log_path(),
            &[],
            run_as,
        )?;
        let ready = wait_ready(
            &mut server,
            &cluster.data,
            &cluster.log_path(),
            Duration::from_secs(60),
        );
        cluster.server = Some(server);
        ready?;
        if let Some(password) = &options.tcp_password {
            let sql = format!(
                "ALTER ROLE {SUPERUSER} PASSWORD '{}'",
                password.replace('\'', "''")
            );
            cluster.psql("postgres", &sql)?;
        }
        Ok(cluster)
    }

    fn init(&mut self, options: &ClusterOptions) -> Result<()> {
        self.run(
            "initdb",
            &[
                &["-D", &self.data.display().to_string(), "-U", SUPERUSER],
                &["-E", "UTF8", "--locale=C", "--auth=trust", "--no-sync"][..],
            ]
            .concat(),
        )?;
        let mut conf = vec![
            format!("port = {}", self.port),
            format!("unix_socket_directories = '{}'", self.socket_dir.display()),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "shared_buffers = 32MB".into(),
            "max_connections = 40".into(),
            "log_min_messages = warning".into(),
        ];
        if self.tcp {
            conf.push("listen_addresses = '127.0.0.1'".into());
        } else {
            conf.push("listen_addresses = ''".into());
        }
        conf.extend(options.settings.iter().cloned());
        append(&self.data.join("postgresql.conf"), &conf.join("\n"))?;
        if self.tcp && options.tls {
            // A test CA (`ca.crt` in the data folder) and a server certificate it signed for
            // the address 127.0.0.1 only (not for `localhost`): what `sslmode=verify-full`
            // accepts and refuses.
            let data = |name: &str| self.data.join(name).display().to_string();
            std::fs::write(self.data.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")
                .map_err(|e| Error::io("writing a test certificate's extensions", e))?;
            let steps: [Vec<String>; 3] = [
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ]
                .map(String::from)
                .into_iter()
                .chain(["-subj".into(), "/CN=lifeboat test CA".into()])
                .chain([
                    "-keyout".into(),
                    data("ca.key"),
                    "-out".into(),
                    data("ca.crt"),
                ])
                .collect(),
                [
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ]
                .map(String::from)
                .into_iter()
                .chain(["-keyout".into(), data("server.key")])
                .chain(["-out".into(), data("server.csr")])
                .collect(),
                ["x509", "-req", "-days", "2", "-CAcreateserial"]
                    .map(String::from)
                    .into_iter()
                    .chain(["-in".into(), data("server.csr")])
                    .chain([
                        "-CA".into(),
                        data("ca.crt"),
                        "-CAkey".into(),
                        data("ca.key"),
                    ])
                    .chain(["-extfile".into(), data("san.ext")])
                    .chain(["-out".into(), data("server.crt")])
                    .collect(),
            ];
            for args in steps {
                let mut openssl = Command::new("openssl");
                openssl
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if let Some((uid, gid)) = self.run_as {
                    openssl.uid(uid).gid(gid);
                }
                let status = openssl
                    .status()
                    .map_err(|e| Error::io("starting `openssl` for a test certificate", e))?;
                if !status.success() {
                    return Err(Error::Tool {
                        tool: "openssl".into(),
                        outcome: format!("could not make a test certificate ({status})"),
                        stderr: String::new(),
                    });
                }
            }
            append(&self.data.join("postgresql.conf"), "ssl = on")?;
        }
        if self.tcp {
            // Local socket stays trusted (for setup); TCP needs the password (and TLS).
            let kind = if options.tls { "hostssl" } else { "host" };
            append(
                &self.data.join("pg_hba.conf"),
                &format!("{kind} all all 127.0.0.1/32 scram-sha-256"),
            )?;
            let hba = std::fs::read_to_string(self.data.join("pg_hba.conf"))
                .map_err(|e| Error::io("reading pg_hba.conf", e))?;
            let kept: Vec<&str> = hba
                .lines()
                .filter(|l| !(l.starts_with("host") && l.contains("trust")))
                .collect();
            std::fs::write(self.data.join("pg_hba.conf"), kept.join("\n") + "\n")
                .map_err(|e| Error::io("writing pg_hba.conf", e))?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.tools.path(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        self.run_grouped(program, args).map(|(out, _)| out)
    }

    /// Runs `program` as a watched process group (see [`crate::process::watchdog`]).
    fn run_grouped(&self, program: &str, args: &[&str]) -> Result<(String, u32)> {
        use crate::process::watchdog;
        let child = watchdog::spawn(
            self.command(program)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| crate::process::spawn_error(&self.tools.path(program), e))?;
        let group = child.id();
        let out = child.wait_with_output().map_err(|e| {
            Error::io(
                format!("waiting for `{}`", self.tools.path(program).display()),
                e,
            )
        })?;
        watchdog::release(group);
        if !out.status.success() {
            return Err(Error::Tool {
                tool: program.to_string(),
                outcome: format!("failed ({})", out.status),
                stderr: crate::error::one_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), group))
    }

    fn run_ctl(&self, args: &[&str]) -> Result<String> {
        let log = self.log_path().display().to_string();
        let data = self.data.display().to_string();
        let mut full = vec!["-D", data.as_str(), "-l", log.as_str()];
        full.extend_from_slice(args);
        self.run("pg_ctl", &full).map_err(|e| {
            let tail = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            match e {
                Error::Tool { tool, outcome, .. } => Error::Tool {
                    tool,
                    outcome,
                    stderr: crate::error::one_line(
                        &tail.lines().rev().take(3).collect::<Vec<_>>().join("\n"),
                    ),
                },
                other => other,
            }
        })
    }

    fn log_path(&self) -> PathBuf {
        self.data
            .parent()
            .expect("data folder has a parent")
            .join("server.log")
    }

    /// Runs SQL through `psql` on the socket, stopping at the first error; returns its output
    /// (unaligned, tuples only).
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.tools.path("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", dbname)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| crate::process::spawn_error(&self.tools.path("psql"), e))?;
        if !out.status.success() {
            return Err(Error::Tool {
                tool: "psql".into(),
                outcome: format!("failed ({})", out.status),
                stderr: crate::error::one_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {}",
                crate::postgres::conn::quote_ident(name)
            ),
        )
        .map(|_| ())
    }

    /// A URL reaching `dbname` through the socket, as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql:///{dbname}?host={}&port={}&user={SUPERUSER}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A URL reaching `dbname` over loopback TCP (the cluster must have been started with a
    /// TCP password); the password is not in it.
    pub fn tcp_url(&self, dbname: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The folder holding the whole cluster (removed on drop).
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    /// Stops the server (fast shutdown); the folder stays until drop.
    pub fn stop(&self) -> Result<()> {
        self.run_ctl(&["stop", "-m", "fast", "-w"]).map(|_| ())
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`): nothing is flushed or
    /// archived on the way out.
    pub fn crash(&self) -> Result<()> {
        self.run_ctl(&["stop", "-m", "immediate", "-w"]).map(|_| ())
    }

    /// Starts the server again after [`ScratchCluster::stop`] (its configuration changed, its
    /// data folder made anew by `pg_upgrade`).
    pub fn start_again(&mut self) -> Result<()> {
        if let Some(mut old) = self.server.take() {
            let _ = old.wait();
            crate::process::watchdog::release(old.id());
        }
        let log = self.log_path();
        let mut server = spawn_server(&self.tools, &self.data, &log, &[], self.run_as)?;
        let ready = wait_ready(&mut server, &self.data, &log, Duration::from_secs(60));
        self.server = Some(server);
        ready
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.run_ctl(&["stop", "-m", "immediate", "-w"]);
        }
        if let Some(mut server) = self.server.take() {
            let _ = server.wait();
            crate::process::watchdog::release(server.id());
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Starts the server on `data` (with extra `options`) as a child of lifeboat in a watched
/// process group of its own, so that it dies with lifeboat (`pg_ctl` would start it in a
/// session of its own, out of reach); its output goes to `log`.
pub fn spawn_server(
    tools: &PgTools,
    data: &Path,
    log: &Path,
    options: &[String],
    run_as: Option<(u32, u32)>,
) -> Result<std::process::Child> {
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(format!("opening the server log `{}`", log.display()), e))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(log, Some(uid), Some(gid)).map_err(|e| {
            Error::io(
                format!("handing `{}` to the server's user", log.display()),
                e,
            )
        })?;
    }
    let errors = output
        .try_clone()
        .map_err(|e| Error::io("opening the server log", e))?;
    let mut cmd = Command::new(tools.path("postgres"));
    cmd.arg("-D")
        .arg(data)
        .args(options)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    crate::process::watchdog::spawn(&mut cmd)
        .map_err(|e| crate::process::spawn_error(&tools.path("postgres"), e))
}

/// Waits until the server started on `data` accepts connections (its pid file says so), as
/// `pg_ctl start -w` does; a server that exits first is an error with its log's last lines.
pub fn wait_ready(
    server: &mut std::process::Child,
    data: &Path,
    log: &Path,
    limit: Duration,
) -> Result<()> {
    let begun = std::time::Instant::now();
    loop {
        let status = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().nth(7).map(|l| l.trim().to_string()));
        if matches!(status.as_deref(), Some("ready" | "standby")) {
            return Ok(());
        }
        let exited = server
            .try_wait()
            .map_err(|e| Error::io("waiting for the server", e))?;
        if exited.is_some() || begun.elapsed() > limit {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(Error::Tool {
                tool: "postgres".into(),
                outcome: match exited {
                    Some(status) => format!("exited while starting ({status})"),
                    None => format!("did not start within {} s", limit.as_secs()),
                },
                stderr: crate::error::one_line(
                    &tail.lines().rev().take(3).collect::<Vec<_>>().join("\n"),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening `{}`", path.display()), e))?;
    writeln!(file, "\n{text}").map_err(|e| Error::io(format!("writing `{}`", path.display()), e))
}

/// A TCP port nobody listens on now.
/// A TCP port nothing listens on now, for a scratch server.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port", e))
}

/// The user to run PostgreSQL as when we are root: `postgres` if it exists, else `nobody`.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    if crate::process::effective_uid() != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        if let Some(ids) = lookup_user(name) {
            return Some(ids);
        }
    }
    Some((65534, 65534))
}

/// A user's ids, through the C library (so NSS users, LDAP's included, are found).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let user = uzers::get_user_by_name(name)?;
    Some((user.uid(), user.primary_group_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_through_the_c_library() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-lifeboat"), None);
        // The same answer as `id -u`.
        let me = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let name = String::from_utf8(me.stdout).unwrap();
        let uid = crate::process::effective_uid();
        assert_eq!(lookup_user(name.trim()).map(|(u, _)| u), Some(uid));
    }
}
