//! Redis: ephemeral by design (a cache and queues that rebuild themselves), so lifeboat checks
//! that it answers and, only when `[redis] backup = true`, stores an RDB snapshot taken with
//! `redis-cli --rdb -` through the same pipeline as every backup. Both go through `redis-cli`,
//! which speaks the protocol, ACL users and TLS (`rediss://`); the password goes to it through
//! `REDISCLI_AUTH`, never on its command line.

use std::io::Read;
use std::time::Duration;

use crate::backup::{About, DataPlan};
use crate::config::{RedisConfig, Secret};
use crate::error::{Error, Result};
use crate::process::Tool;
use crate::repository::manifest::{self, BackupKind, DumpOptions, Manifest};
use crate::repository::Repository;
use crate::Context;

/// Where Redis is and how to log in: `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, the user
/// and password percent-decoded.
#[derive(Debug)]
struct Endpoint {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Secret>,
    tls: bool,
    db: Option<u32>,
}

impl Endpoint {
    fn parse(config: &RedisConfig) -> Result<Endpoint> {
        let bad = || {
            Error::Config(
                "`redis.url` must be `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://` for TLS)"
                    .into(),
            )
        };
        let url = url::Url::parse(config.url.expose()).map_err(|_| bad())?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad()),
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| bad())
        };
        let user = Some(decode(url.username())?).filter(|u| !u.is_empty());
        let password = url.password().map(decode).transpose()?.map(Secret::new);
        // `user` and `password` keys, when set, win over the URL's.
        let user = config.user.clone().or(user);
        let password = config.password.clone().or(password);
        let db = match url.path().trim_start_matches('/') {
            "" => None,
            n => Some(n.parse().map_err(|_| bad())?),
        };
        Ok(Endpoint {
            host: url.host_str().unwrap_or("127.0.0.1").to_string(),
            port: url.port().unwrap_or(6379),
            user,
            password,
            tls,
            db,
        })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `redis-cli` reaching this endpoint.
    fn cli(&self) -> Tool {
        let mut tool = Tool::new("redis-cli").args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
        ]);
        if let Some(user) = &self.user {
            tool = tool.args(["--user", user]);
        }
        if self.tls {
            tool = tool.arg("--tls");
        }
        if let Some(db) = self.db {
            tool = tool.args(["-n".to_string(), db.to_string()]);
        }
        if let Some(password) = &self.password {
            tool = tool.env("REDISCLI_AUTH", password.expose());
        }
        tool
    }
}

/// Whether Redis answers `PING`; the answer, or why not.
pub async fn check(config: &RedisConfig) -> Result<String> {
    let endpoint = Endpoint::parse(config)?;
    let address = endpoint.address();
    let unreachable = |detail: String| Error::Unreachable {
        what: format!("redis at `{address}`"),
        detail,
    };
    let mut child = endpoint.cli().arg("PING").spawn_reader()?;
    let killer = child.killer();
    let asking = tokio::task::spawn_blocking(move || {
        let mut answer = String::new();
        child.read_to_string(&mut answer).map(|_| answer)
    });
    let answer = match tokio::time::timeout(Duration::from_secs(3), asking).await {
        Err(_) => {
            killer.kill();
            return Err(unreachable("no answer within 3 s".into()));
        }
        Ok(joined) => joined.map_err(|e| Error::thread("redis-cli", e))?,
    };
    match answer {
        Ok(answer) if answer.trim() == "PONG" => Ok(format!("redis at `{address}` answers PING")),
        Ok(answer) => Err(unreachable(format!(
            "answered `{}`",
            crate::error::one_line(answer.trim())
        ))),
        Err(e) => Err(unreachable(crate::error::one_line(
            &crate::pipeline::from_io(e, "asking redis").to_string(),
        ))),
    }
}

/// Takes an RDB snapshot into the repository; the backup's id and stored size.
pub async fn backup_redis(
    ctx: &Context,
    repo: &Repository,
    config: &RedisConfig,
) -> Result<Manifest> {
    let endpoint = Endpoint::parse(config)?;
    let started_at = jiff::Timestamp::now();
    let id = manifest::new_backup_id(started_at);
    let source = endpoint.cli().args(["--rdb", "-"]).spawn_reader()?;
    let plan = DataPlan::new(ctx, BackupKind::Redis, &id, 1 << 30, 0);
    let uploaded = plan.upload_from(ctx, repo, "backup redis", source).await;
    let prepared = uploaded.map(|stats| {
        plan.manifest(
            About {
                id: id.clone(),
                kind: BackupKind::Redis,
                database: "redis".into(),
                dbname: endpoint.address(),
                options: DumpOptions::default(),
                server_version: String::new(),
                client_version: "redis-cli".into(),
                started_at,
                tables: Vec::new(),
                base: None,
            },
            stats,
        )
    });
    repo.finish_backup(&[&plan.data], prepared, &ctx.cancel)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint> {
        Endpoint::parse(&RedisConfig {
            url: Secret::new(url),
            user: None,
            password: None,
            password_file: None,
            backup: false,
        })
    }

    #[test]
    fn keys_win_over_the_url() {
        let e = Endpoint::parse(&RedisConfig {
            url: Secret::new("redis://old:x@cache:6379"),
            user: Some("app".into()),
            password: Some(Secret::new("p w!")),
            password_file: None,
            backup: false,
        })
        .unwrap();
        assert_eq!(e.user.as_deref(), Some("app"));
        assert_eq!(e.password.as_ref().map(Secret::expose), Some("p w!"));
    }

    #[test]
    fn urls_with_users_tls_and_encoded_passwords() {
        let e = endpoint("rediss://alice:p%40ss%20w%21rd@cache.internal:6380/2").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("cache.internal", 6380));
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.password.as_ref().map(Secret::expose), Some("p@ss w!rd"));
        assert!(e.tls);
        assert_eq!(e.db, Some(2));
        let plain = endpoint("redis://:secret@127.0.0.1").unwrap();
        assert_eq!(
            (plain.user.as_deref(), plain.port, plain.tls),
            (None, 6379, false)
        );
        let cli = format!("{:?}", plain.cli().args);
        assert!(
            !cli.contains("secret"),
            "the password is on the command line: {cli}"
        );
        assert!(endpoint("http://127.0.0.1").is_err());
    }
}
