//! Connecting to PostgreSQL, from lifeboat itself and from the tools it runs.
//!
//! lifeboat connects with `tokio-postgres`; `pg_dump` and `pg_restore` get the same target
//! through libpq's environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`) and the
//! password through a private password file (`PGPASSFILE`, mode 0600, removed afterwards), so
//! it is never in a process's arguments or environment.

use std::io::Write;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls};

use crate::config::{redact_url, Secret};
use crate::error::{Error, Result};
use crate::process::Tool;

/// Where and how to connect: parsed from a URL plus an optional separate password.
#[derive(Clone)]
pub struct ConnInfo {
    config: tokio_postgres::Config,
    redacted: String,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnInfo({})", self.redacted)
    }
}

impl ConnInfo {
    pub fn new(url: &str, password: Option<&Secret>) -> Result<ConnInfo> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::invalid(format!("malformed postgres url `{}`: {e}", redact_url(url)))
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
        Ok(ConnInfo {
            config,
            redacted: redact_url(url),
        })
    }

    /// The URL with its password hidden, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
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
    pub async fn connect(&self, what: &str) -> Result<Client> {
        if self.config.get_ssl_mode() == SslMode::Require {
            return Err(Error::invalid(format!(
                "{what} `{}` asks for `sslmode=require`, which this build does not support yet: use `sslmode=prefer` or a local socket",
                self.redacted
            )));
        }
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            Error::postgres(format!("cannot connect to {what} `{}`", self.redacted), &e)
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// Adds libpq environment for `tool` to reach this database, and returns the password file
    /// that must live as long as the tool runs.
    pub fn apply_to(&self, tool: Tool) -> Result<(Tool, Option<tempfile::NamedTempFile>)> {
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
        let sslmode = match self.config.get_ssl_mode() {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            _ => "prefer",
        };
        tool = tool.env("PGSSLMODE", sslmode);
        let passfile = match self.config.get_password() {
            None => None,
            Some(password) => {
                let mut file = tempfile::Builder::new()
                    .prefix(".lifeboat-pgpass-")
                    .tempfile()
                    .map_err(|e| Error::io("creating a private password file", e))?;
                let escaped = String::from_utf8_lossy(password)
                    .replace('\\', "\\\\")
                    .replace(':', "\\:");
                writeln!(file, "*:*:*:*:{escaped}")
                    .and_then(|()| file.flush())
                    .map_err(|e| Error::io("writing a private password file", e))?;
                tool = tool.env("PGPASSFILE", file.path());
                Some(file)
            }
        };
        Ok((tool, passfile))
    }
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
