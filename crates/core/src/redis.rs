//! Redis: ephemeral by design (a cache and queues that rebuild themselves), so lifeboat checks
//! that it answers and, only when `[redis] backup = true`, stores an RDB snapshot taken with
//! `redis-cli --rdb -` through the same pipeline as every backup. The password goes to
//! `redis-cli` through `REDISCLI_AUTH`, never on its command line.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backup::{About, DataPlan};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::manifest::{self, BackupKind, DumpOptions};
use crate::process::Tool;
use crate::repository::Repository;
use crate::Context;

/// Host, port and password of a `redis://` URL.
struct Target {
    host: String,
    port: u16,
    password: Option<String>,
}

fn target(config: &RedisConfig) -> Result<Target> {
    let url = url::Url::parse(config.url.expose())
        .ok()
        .filter(|u| u.scheme() == "redis")
        .ok_or_else(|| {
            Error::Config("`redis.url` must be `redis://[:PASSWORD@]HOST[:PORT]`".into())
        })?;
    Ok(Target {
        host: url.host_str().unwrap_or("127.0.0.1").to_string(),
        port: url.port().unwrap_or(6379),
        password: url.password().map(str::to_string),
    })
}

/// Whether Redis answers `PING`; the answer, or why not.
pub async fn check(config: &RedisConfig) -> Result<String> {
    let t = target(config)?;
    let address = format!("{}:{}", t.host, t.port);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        let mut request = Vec::new();
        if let Some(password) = &t.password {
            request.extend(
                format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len()).as_bytes(),
            );
        }
        request.extend(b"*1\r\n$4\r\nPING\r\n");
        stream.write_all(&request).await?;
        let mut answer = vec![0u8; 256];
        let mut got = 0;
        while !String::from_utf8_lossy(&answer[..got]).contains("PONG") && got < answer.len() {
            let n = stream.read(&mut answer[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
            if answer[..got].starts_with(b"-") {
                break;
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer[..got]).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| Error::invalid(format!("redis at `{address}` did not answer within 3 s")))?
        .map_err(|e| Error::invalid(format!("redis at `{address}`: {e}")))?;
    if answer.contains("+PONG") {
        Ok(format!("redis at `{address}` answers PING"))
    } else {
        Err(Error::invalid(format!(
            "redis at `{address}` answered `{}`",
            crate::error::one_line(answer.trim())
        )))
    }
}

/// Takes an RDB snapshot into the repository; the backup's id and stored size.
pub async fn backup(
    ctx: &Context,
    repo: &Repository,
    config: &RedisConfig,
) -> Result<(String, Option<u64>)> {
    let t = target(config)?;
    let started_at = jiff::Timestamp::now();
    let id = manifest::new_backup_id(started_at);
    let mut tool = Tool::new("redis-cli").args([
        "-h",
        &t.host,
        "-p",
        &t.port.to_string(),
        "--no-auth-warning",
        "--rdb",
        "-",
    ]);
    if let Some(password) = &t.password {
        tool = tool.env("REDISCLI_AUTH", password.clone());
    }
    let source = tool.spawn_reader()?;
    let plan = DataPlan::new(ctx, BackupKind::Redis, &id, 1 << 30, 0);
    let uploaded = plan.upload_from(ctx, repo, "backup redis", source).await;
    let prepared = uploaded.map(|stats| {
        plan.manifest(
            About {
                id: id.clone(),
                kind: BackupKind::Redis,
                database: "redis".into(),
                dbname: format!("{}:{}", t.host, t.port),
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
    let manifest = repo
        .finish_backup(&plan.data, prepared, &ctx.cancel)
        .await?;
    Ok((manifest.id, Some(manifest.stored_size)))
}
