//! Where `restore table` reads tables as they were: a base backup recovered to the moment on
//! a throwaway server (the newest base before it, the archived WAL up to it), or, with
//! `--from-dump`, a scratch cluster holding a dump's definitions and the named tables' data.
//! Either is stopped and removed when the [`Source`] is dropped.

use std::path::PathBuf;

use tokio_postgres::Client;

use super::names::Qualified;
use super::TableRequest;
use crate::error::{Error, Result};
use crate::postgres::cluster::{ClusterOptions, ScratchCluster, SUPERUSER};
use crate::postgres::conn::{connect_socket, ConnInfo};
use crate::postgres::pitr::throwaway::{self, Throwaway, ThrowawayRequest};
use crate::postgres::pitr::TargetTimeline;
use crate::postgres::restore::{copy_list, read_toc, restore_listed, Archive};
use crate::process::Tool;
use crate::repository::keys::identities_for;
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::Context;

/// A running server with the tables as they were.
pub(super) struct Source {
    socket: PathBuf,
    port: u16,
    pub dbname: String,
    user: String,
    /// When replay stopped (the last transaction replayed), for a recovery.
    pub reached: Option<String>,
    pub seconds: f64,
    _held: Held,
}

/// What keeps the server alive: held only to be stopped and removed when dropped.
#[allow(dead_code)]
enum Held {
    Recovered(Box<Throwaway>),
    Scratch(ScratchCluster),
}

impl Source {
    pub async fn connect(&self) -> Result<Client> {
        let what = "the recovered server";
        connect_socket(&self.socket, self.port, &self.dbname, &self.user, what).await
    }

    /// `pg_dump` reaching this server's database as its superuser.
    pub fn pg_dump(&self, ctx: &Context) -> Tool {
        ctx.tools
            .tool("pg_dump")
            .env("PGHOST", &self.socket)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.dbname)
            .env("PGAPPNAME", "lifeboat")
    }
}

/// The role a recovered cluster is first reached as: the one that took the backup.
pub(crate) fn backup_role(ctx: &Context, database: &str) -> String {
    ctx.config
        .postgres
        .get(database)
        .and_then(|pg| pg.url.expose().parse::<tokio_postgres::Config>().ok())
        .and_then(|c| c.get_user().map(str::to_string))
        .unwrap_or_else(|| "postgres".into())
}

/// Recovers `base` to `request.as_of` on a throwaway server.
pub(super) async fn recovered(
    ctx: &Context,
    repo: &Repository,
    request: &TableRequest,
    base: &Manifest,
    dbname: &str,
) -> Result<Source> {
    let begun = std::time::Instant::now();
    let recovered = throwaway::recover(
        ctx,
        repo,
        &ThrowawayRequest {
            db: None,
            target: request.target(),
            timeline: TargetTimeline::Latest,
            base: Some(base.id.clone()),
            identity: request.identity.clone(),
            work_dir: request.work_dir.clone(),
            prefix: "lifeboat-table-",
        },
    )
    .await?;
    let (client, superuser) = recovered
        .connect_superuser(dbname, &backup_role(ctx, &base.database))
        .await?;
    drop(client);
    Ok(Source {
        socket: recovered.socket.clone(),
        port: recovered.port,
        dbname: dbname.into(),
        user: superuser,
        reached: recovered.report.reached.clone(),
        seconds: begun.elapsed().as_secs_f64(),
        _held: Held::Recovered(Box::new(recovered)),
    })
}

/// Restores `dump`'s definitions, and the data of `tables` and their partitions, into a
/// scratch cluster.
pub(super) async fn from_dump(
    ctx: &Context,
    repo: &Repository,
    request: &TableRequest,
    dump: &Manifest,
    tables: &[Qualified],
) -> Result<Source> {
    let begun = std::time::Instant::now();
    let tools = ctx.tools.clone();
    let options = ClusterOptions {
        parent: request.work_dir.clone(),
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || ScratchCluster::start(&tools, &options))
        .await
        .map_err(|e| Error::thread("scratch cluster", e))??;
    let dbname = "lifeboat_table";
    cluster.create_database(dbname)?;
    let target = ConnInfo::new(&cluster.url(dbname), None)?;
    let identities = identities_for(&ctx.config, dump, request.identity.as_deref())?;
    let archive = Archive::new(repo, dump, identities);
    let toc = read_toc(ctx, &archive).await?;
    restore_listed(
        ctx,
        &archive,
        &target,
        &copy_list(&toc, &[]),
        &["pre-data"],
        false,
    )
    .await?;
    // The partitions are known once the definitions are in.
    let client = target.connect("the scratch cluster").await?;
    let mut data_of = Vec::new();
    for table in tables {
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text \
                 FROM pg_partition_tree(to_regclass($1)) t \
                 JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace",
                &[&table.sql()],
            )
            .await
            .map_err(|e| Error::postgres("listing partitions on the scratch cluster", &e))?;
        // A table that is neither partitioned nor a partition has no partition tree.
        data_of.push((table.schema.clone(), table.name.clone()));
        data_of.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    drop(client);
    let list = copy_list(&toc, &data_of);
    // The archive is verified whole before the data commits: the definitions above were
    // read from it unverified, on this throwaway server only.
    restore_listed(ctx, &archive, &target, &list, &["data", "post-data"], true).await?;
    Ok(Source {
        socket: cluster.socket_dir().to_path_buf(),
        port: cluster.port(),
        dbname: dbname.into(),
        user: SUPERUSER.into(),
        reached: None,
        seconds: begun.elapsed().as_secs_f64(),
        _held: Held::Scratch(cluster),
    })
}
