//! One file per subcommand: each resolves its inputs, calls the engine and prints the result
//! (text, or JSON with `--json`); [`run`] dispatches.

mod backup;
mod config;
mod copy;
mod drill;
mod find;
mod init;
mod key;
mod lifecycle;
mod list;
mod objects;
mod prune;
mod restore;
mod run;
mod show;
mod status;
mod verify;
mod wal;

use lifeboat_core::{Context, Result};

use crate::cli::{BackupCommand, Cli, Command, ConfigCommand, KeyCommand, RestoreCommand};

pub async fn run(ctx: &Context, args: &Cli) -> Result<()> {
    let json = args.json;
    match &args.command {
        Command::Init => init::init(ctx, json).await,
        Command::Config(ConfigCommand::Check) => config::check(ctx, json),
        Command::Key(KeyCommand::Generate { out }) => key::generate(out, json),
        Command::Backup(BackupCommand::Db(b)) => backup::db(ctx, b, json).await,
        Command::Backup(BackupCommand::Base { db, incremental }) => {
            backup::base(ctx, db.as_deref(), *incremental, json).await
        }
        Command::Backup(BackupCommand::Redis) => backup::redis(ctx, json).await,
        Command::Backup(BackupCommand::Objects { name, dry_run }) => {
            objects::backup(ctx, name.as_deref(), *dry_run, json).await
        }
        Command::List { what } => list::list(ctx, *what, json).await,
        Command::Show { id } => show::show(ctx, id, json).await,
        Command::Restore(RestoreCommand::Db(r)) => restore::db(ctx, r, json).await,
        Command::Restore(RestoreCommand::Pitr(p)) => restore::pitr(ctx, p, json).await,
        Command::Restore(RestoreCommand::Objects(r)) => objects::restore(ctx, r, json).await,
        Command::Restore(RestoreCommand::Table(t)) => restore::table(ctx, t, json).await,
        Command::Verify {
            id,
            kind,
            quick,
            jobs,
            identity,
            thaw,
        } => {
            let mut request = verify::request(id, *kind, *quick, *jobs, identity.clone());
            request.thaw = thaw.thaw(ctx.lock_wait);
            verify::verify(ctx, &request, json).await
        }
        Command::Run { job } => run::run(ctx, job, json).await,
        Command::Daemon { run_at_start } => lifeboat_core::run_daemon(ctx, *run_at_start).await,
        Command::Status { prometheus } => status::status(ctx, json, prometheus.as_deref()).await,
        Command::Doctor => status::doctor(ctx, json).await,
        Command::Prune { dry_run, at, force } => {
            prune::prune(ctx, *dry_run, *force, at.as_deref(), json).await
        }
        Command::Copy { name, dry_run } => copy::copy(ctx, name.as_deref(), *dry_run, json).await,
        Command::Lifecycle {
            apply,
            locks,
            check_locks,
        } => match (locks, check_locks) {
            (false, None) => lifecycle::lifecycle(ctx, *apply, json).await,
            (_, check) => lifecycle::locks(ctx, check.as_deref(), json),
        },
        Command::Undelete { dry_run } => lifecycle::undelete(ctx, *dry_run, json).await,
        Command::WalPush { db, path } => wal::push(ctx, args, db.as_deref(), path).await,
        Command::WalPushAhead { db, path } => wal::push_ahead(ctx, db.as_deref(), path).await,
        Command::WalFetch {
            db,
            generation,
            name,
            dest,
        } => {
            let from = wal::Archive::new(db.as_deref(), *generation);
            wal::fetch(ctx, args, &from, name, dest).await
        }
        Command::WalPrefetch {
            db,
            generation,
            names,
        } => wal::prefetch(ctx, &wal::Archive::new(db.as_deref(), *generation), names).await,
        Command::Upgrade {
            db,
            no_backup,
            dry_run,
        } => wal::upgrade(ctx, db.as_deref(), !*no_backup, *dry_run, json).await,
        Command::Wal(command) => find::run(ctx, command, json).await,
        Command::WalStream { db, dry_run } => wal::stream(ctx, db.as_deref(), *dry_run, json).await,
        Command::Drill => drill::drill(ctx, json).await,
        Command::Unlock { dry_run } => init::unlock(ctx, *dry_run, json).await,
        Command::Mark { name, db } => wal::mark(ctx, name, db.as_deref(), json).await,
        Command::Watchdog | Command::Completions { .. } | Command::Man { .. } => Ok(()),
    }
}
