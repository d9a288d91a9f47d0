//! Connecting to PostgreSQL, from lifeboat itself and from the tools it runs.
//!
//! lifeboat connects with `tokio-postgres`; `pg_dump` and `pg_restore` get the same target
//! through libpq's environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`) and the
//! password through a private password file (`PGPASSFILE`, mode 0600, removed afterwards), so
//! it is never in a process's arguments or environment.
//!
//! TLS as libpq's `sslmode`: `prefer` and `require` encrypt without checking who answers;
//! `verify-ca` checks that the server's certificate is signed by `sslrootcert` (a CA file),
//! and `verify-full` also that it names the host connected to (its subject alternative
//! names). tokio-postgres knows the first ones only, so the verifying modes and `sslrootcert`
//! are taken out of the URL here, and the tools are given `PGSSLMODE` and `PGSSLROOTCERT`.

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls};

use crate::config::{redact_url, Secret};
use crate::error::{Error, Result};
use crate::process::{Tool, Unnamed};

use super::tls;

/// Where and how to connect: parsed from a URL plus an optional separate password.
#[derive(Clone)]
pub struct ConnInfo {
    pub(super) config: tokio_postgres::Config,
    redacted: String,
    /// `sslmode=verify-ca` or `verify-full`: the server's certificate is checked.
    pub(super) verify: Option<tls::Verify>,
}

/// Takes the verifying `sslmode` and `sslrootcert` out of a URL's query (tokio-postgres does
/// not know them), giving the URL with `sslmode=require` in their place; without
/// `sslrootcert`, libpq's `~/.postgresql/root.crt`.
fn take_verification(url: &str) -> Result<(String, Option<tls::Verify>)> {
    let (parsed, asked) = crate::config::split_tls_verification(url);
    let Some((full, root)) = asked else {
        return Ok((parsed, None));
    };
    let root = match root {
        Some(root) => root,
        None => std::env::var_os("HOME")
            .map(|home| std::path::Path::new(&home).join(".postgresql/root.crt"))
            .filter(|p| p.exists())
            .ok_or_else(|| {
                Error::Config(format!(
                    "`sslmode={}` in `{}` needs the CA that signed the server's certificate: add `sslrootcert=FILE` to the URL",
                    if full { "verify-full" } else { "verify-ca" },
                    redact_url(url)
                ))
            })?,
    };
    Ok((parsed, Some(tls::Verify { full, root })))
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnInfo({})", self.redacted)
    }
}

impl ConnInfo {
    pub fn new(url: &str, password: Option<&Secret>) -> Result<ConnInfo> {
        let (parsed, verify) = take_verification(url)?;
        let mut config: tokio_postgres::Config = parsed.parse().map_err(|e| {
            Error::Usage(format!("malformed postgres url `{}`: {e}", redact_url(url)))
        })?;
        if let Some(password) = password {
            config.password(password.expose());
        } else if config.get_password().is_none() {
            // libpq's convention, for tools started by cron with the password in the environment.
            if let Some(password) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
                config.password(password);
            }
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or("postgres").to_string();
            config.dbname(&user);
        }
        if config.get_password().is_none() {
            if let Some(password) = pgpass_password(&config) {
                config.password(password);
            }
        }
        Ok(ConnInfo {
            config,
            redacted: redact_url(url),
            verify,
        })
    }

    /// The URL with its password hidden, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// The same server and role, connected to database `dbname`.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// The same role and database, reached through a local socket instead.
    pub fn on_socket(&self, socket_dir: &std::path::Path, port: u16) -> tokio_postgres::Config {
        // A fresh config: adding a host to a copy would keep the original one first.
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(socket_dir)
            .port(port)
            .dbname(self.dbname());
        if let Some(user) = self.config.get_user() {
            config.user(user);
        }
        if let Some(password) = self.config.get_password() {
            config.password(password);
        }
        config
    }

    /// Connects; the connection's driver runs on the tokio runtime until the client is dropped.
    ///
    /// With `sslmode=prefer` (the default) or `require` the connection is encrypted when the
    /// server offers TLS (required with `require`); as with libpq's `require`, the server's
    /// certificate is not verified; with `verify-ca` it must be signed by `sslrootcert`, with
    /// `verify-full` also name the host. Over a local socket there is no TLS.
    pub async fn connect(&self, what: &str) -> Result<Client> {
        let failed = |e: tokio_postgres::Error| {
            Error::postgres(format!("cannot connect to {what} `{}`", self.redacted), &e)
        };
        let client = if !self.uses_tls() {
            let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        } else {
            let (client, connection) = self
                .config
                .connect(tls::connector(self.verify.as_ref())?)
                .await
                .map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        };
        Ok(client)
    }

    /// Connects as [`ConnInfo::connect`], with `options` (as libpq's `PGOPTIONS`: `-c
    /// name=value ...`) after the URL's own, and named `lifeboat` in `pg_stat_activity` unless
    /// the URL names the application.
    pub async fn connect_with_options(&self, what: &str, options: &str) -> Result<Client> {
        let mut with = self.clone();
        let options = match self.config.get_options() {
            Some(own) if !own.is_empty() => format!("{own} {options}"),
            _ => options.to_string(),
        };
        if !options.trim().is_empty() {
            with.config.options(options);
        }
        if with.config.get_application_name().is_none() {
            with.config.application_name("lifeboat");
        }
        with.connect(what).await
    }

    /// Asks the server to cancel what `client` is running, over a connection of its own (as
    /// `client` was made: with TLS or without); a failure is only logged.
    pub async fn cancel(&self, client: &Client) {
        let token = client.cancel_token();
        let sent = if self.uses_tls() {
            match tls::connector(self.verify.as_ref()) {
                Ok(tls) => token.cancel_query(tls).await,
                Err(e) => {
                    tracing::debug!(error = %e, "could not cancel a query");
                    return;
                }
            }
        } else {
            token.cancel_query(NoTls).await
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not cancel a query");
        }
    }

    /// Whether connections are made with TLS: not with `sslmode=disable`, nor over a local
    /// socket (which has no name for a certificate).
    pub(super) fn uses_tls(&self) -> bool {
        self.config.get_ssl_mode() != SslMode::Disable
            && self
                .config
                .get_hosts()
                .iter()
                .any(|h| matches!(h, Host::Tcp(_)))
    }

    /// Adds libpq environment for `tool` to reach this database, and returns the password file
    /// that must live as long as the tool runs (unnamed: nothing holds the password on disk,
    /// whatever becomes of lifeboat).
    pub fn apply_to(&self, tool: Tool) -> Result<(Tool, Option<Unnamed>)> {
        let mut tool = tool
            .env("PGDATABASE", self.dbname())
            .env("PGAPPNAME", "lifeboat");
        if let Some(user) = self.config.get_user() {
            tool = tool.env("PGUSER", user);
        }
        if let Some(host) = self.config.get_hosts().first() {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            tool = tool.env("PGHOST", host);
        }
        if let Some(port) = self.config.get_ports().first() {
            tool = tool.env("PGPORT", port.to_string());
        }
        let sslmode = match (&self.verify, self.config.get_ssl_mode()) {
            (Some(v), _) if v.full => "verify-full",
            (Some(_), _) => "verify-ca",
            (None, SslMode::Disable) => "disable",
            (None, SslMode::Require) => "require",
            _ => "prefer",
        };
        tool = tool.env("PGSSLMODE", sslmode);
        if let Some(verify) = &self.verify {
            tool = tool.env("PGSSLROOTCERT", verify.root.as_os_str());
        }
        let passfile = match self.config.get_password() {
            None => None,
            Some(password) => {
                let escaped = String::from_utf8_lossy(password)
                    .replace('\\', "\\\\")
                    .replace(':', "\\:");
                let file =
                    Unnamed::memory("lifeboat-pgpass", format!("*:*:*:*:{escaped}\n").as_bytes())
                        .map_err(|e| Error::io("creating a private password file", e))?;
                tool = tool.env("PGPASSFILE", file.path());
                Some(file)
            }
        };
        Ok((tool, passfile))
    }
}

/// Connects to `dbname` as `user` through the socket folder `socket` (a throwaway server's,
/// which trusts its own socket).
pub async fn connect_socket(
    socket: &std::path::Path,
    port: u16,
    dbname: &str,
    user: &str,
    what: &str,
) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket)
        .port(port)
        .dbname(dbname)
        .user(user)
        .application_name("lifeboat");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::postgres(format!("connecting to {what}"), &e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_get_env_not_arguments() {
        let info = ConnInfo::new("postgresql://bob:s3cr:et@db.example:6543/yomira", None).unwrap();
        let (tool, passfile) = info.apply_to(Tool::new("pg_dump")).unwrap();
        assert!(tool.args.is_empty());
        let env: std::collections::HashMap<_, _> = tool.env.iter().cloned().collect();
        assert_eq!(env["PGHOST"], "db.example");
        assert_eq!(env["PGPORT"], "6543");
        assert_eq!(env["PGUSER"], "bob");
        assert_eq!(env["PGDATABASE"], "yomira");
        assert!(!format!("{tool:?}").contains("s3cr"));
        let passfile = passfile.unwrap();
        let text = std::fs::read_to_string(passfile.path()).unwrap();
        assert_eq!(text, "*:*:*:*:s3cr\\:et\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(passfile.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "password file readable by others");
        assert!(!format!("{info:?}").contains("s3cr"));
    }

    #[test]
    fn verifying_ssl_modes_are_taken_out_of_the_url() {
        let (url, verify) = take_verification(
            "postgresql://u@db.example:5432/yomira?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&application_name=x",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgresql://u@db.example:5432/yomira?application_name=x&sslmode=require"
        );
        assert_eq!(
            verify,
            Some(tls::Verify {
                full: true,
                root: "/etc/ca.crt".into()
            })
        );
        let (_, verify) =
            take_verification("postgresql://h/d?sslmode=verify-ca&sslrootcert=/ca.pem").unwrap();
        assert!(!verify.unwrap().full);
        let (url, verify) = take_verification("postgresql://h/d?sslmode=require").unwrap();
        assert_eq!(
            (url.as_str(), verify),
            ("postgresql://h/d?sslmode=require", None)
        );
        let info = ConnInfo::new(
            "postgresql://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem",
            None,
        )
        .unwrap();
        let (tool, _) = info.apply_to(Tool::new("pg_dump")).unwrap();
        let env: std::collections::HashMap<_, _> = tool.env.iter().cloned().collect();
        assert_eq!(env["PGSSLMODE"], "verify-full");
        assert_eq!(env["PGSSLROOTCERT"], "/ca.pem");
    }

    #[test]
    fn separate_password_and_socket_host() {
        let secret = Secret::new("pw");
        let info =
            ConnInfo::new("postgresql://u@/db?host=/tmp/sock&port=5999", Some(&secret)).unwrap();
        let (tool, passfile) = info.apply_to(Tool::new("pg_restore")).unwrap();
        let env: std::collections::HashMap<_, _> = tool.env.iter().cloned().collect();
        assert_eq!(env["PGHOST"], "/tmp/sock");
        assert!(passfile.is_some());
        assert_eq!(quote_ident("We\"ird"), "\"We\"\"ird\"");
        let moved = info.on_socket(std::path::Path::new("/run/other"), 6000);
        assert_eq!(moved.get_hosts(), &[Host::Unix("/run/other".into())]);
        assert_eq!(moved.get_ports(), &[6000]);
        assert_eq!(moved.get_user(), Some("u"));
    }
}

/// The password libpq would take from the password file ($PGPASSFILE, else ~/.pgpass) for
/// this host, port, database and user (`*` matches anything; `\:` and `\\` are escapes).
fn pgpass_password(config: &tokio_postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(name) => name.clone(),
        // libpq matches a socket connection against `localhost`.
        Host::Unix(_) => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let wanted = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or_default(),
        config.get_user().unwrap_or_default(),
    ];
    pgpass_lookup(&text, &wanted)
}

fn pgpass_lookup(text: &str, wanted: &[&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(have, want)| have == "*" || have == want)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

#[cfg(test)]
mod pgpass_tests {
    use super::pgpass_lookup;

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.internal:5432:other:backup:wrong\n\
                    db.internal:*:yomira:backup:pa\\:ss\\\\word\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, &["db.internal", "5433", "yomira", "backup"]).as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            pgpass_lookup(text, &["elsewhere", "5432", "x", "y"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c:d:e\n", &["x", "b", "c", "d"]), None);
    }
}
