//! `lifeboat`: the command line over `lifeboat-core`.
//!
//! It parses flags, sets up logging and progress, turns SIGINT/SIGTERM into a clean stop of the
//! engine (uploads aborted, children stopped, nothing committed), prints results (`--json` for
//! scripts), and maps errors to one line on stderr (one JSON object with `--json`) and an exit
//! code: 1 for errors, 2 for usage, 3 for a backup that does not restore or verify as recorded,
//! 4 for breached objectives, 5 when another run holds the lock, 6 for a location that is not a
//! repository, 75 for a temporary failure worth retrying, 130 when interrupted.
//!
//! `wal-fetch` is PostgreSQL's `restore_command`, which reads any exit code up to 125 as "not
//! in the archive", i.e. the end of recovery: the server would be promoted there, short of its
//! target. So `wal-fetch` exits 1 only for a file the archive does not have, and
//! [`WAL_FETCH_FAILED`] for anything else (storage, key, damaged file, bad configuration or
//! usage), which makes PostgreSQL stop recovery with the error in its log instead.

mod cli;
mod commands;
mod output;
mod progress;
#[cfg(test)]
mod reference;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lifeboat_core::{config::Config, CancellationToken, Context};
use tracing_subscriber::EnvFilter;

/// How long a command asked to stop may spend cleaning up before it exits anyway.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// `wal-fetch`'s exit code when it fails: above 125, which PostgreSQL takes as fatal.
const WAL_FETCH_FAILED: u8 = 255;

/// Runs this command again with glibc's mmap threshold fixed, so that large freed buffers go
/// back to the system. `wal find` reads each segment (16 MiB, and its compressed form) into
/// buffers of its own; glibc raises its threshold after the first such free and then keeps
/// them in its heaps, fragmented: reading 131 segments peaked at 172 MiB and grew with the
/// segments read; with the threshold fixed, 44 MiB (`scripts/bench-find.sh 120`). The threshold
/// is read when the process starts, hence the new start; where that fails, it goes on as is.
fn large_buffers_unmapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const THRESHOLD: &str = "MALLOC_MMAP_THRESHOLD_";
        if std::env::var_os(THRESHOLD).is_some() {
            return;
        }
        if let Ok(exe) = std::env::current_exe() {
            // `exec` returns only when it fails.
            let _ = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(THRESHOLD, (4u32 << 20).to_string())
                .exec();
        }
    }
}

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // (`args_os`: an argument that is not UTF-8 is clap's error to report, not a panic)
            let fetching = std::env::args_os().any(|a| a == "wal-fetch");
            return ExitCode::from(if fetching && e.use_stderr() {
                WAL_FETCH_FAILED
            } else {
                e.exit_code() as u8
            });
        }
    };
    if matches!(args.command, cli::Command::Wal(_)) {
        large_buffers_unmapped();
    }
    match &args.command {
        cli::Command::Watchdog => {
            lifeboat_core::process::watchdog::run(std::io::stdin().lock());
            return ExitCode::SUCCESS;
        }
        cli::Command::Completions { shell } => {
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "lifeboat", &mut script);
            // A reader that stops early (`| head`) is no error.
            return match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: writing the completion script: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            };
        }
        cli::Command::Man { out } => {
            let command = <cli::Cli as clap::CommandFactory>::command();
            return match clap_mangen::generate_to(command, out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the man pages into `{}`: {e}", out.display());
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let fetching = matches!(args.command, cli::Command::WalFetch { .. });
    init_logging(&args);
    // Children die with this process, even when it is killed.
    if let Ok(exe) = std::env::current_exe() {
        lifeboat_core::process::watchdog::install(exe, vec!["watchdog".into()]);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(if fetching { WAL_FETCH_FAILED } else { 1 });
        }
    };
    let result = runtime.block_on(async {
        let mut config = Config::load(args.config.as_deref())?;
        if let Some(copy) = &args.from {
            reads_from_copy(&args.command)?;
            config = config.for_copy(copy)?;
        }
        let mut ctx = Context::new(config);
        sweep_leftovers(&args, &ctx);
        ctx.lock_wait = std::time::Duration::from_secs(args.wait);
        ctx.progress =
            progress::for_stderr(args.quiet || args.json && !std::io::stderr().is_terminal());
        watch_signals(ctx.cancel.clone());
        match archive_deadline(&ctx, &args.command) {
            Some(limit) => within(&ctx, limit, commands::run(&ctx, &args)).await,
            None => commands::run(&ctx, &args).await,
        }
    });
    // Whatever this command leaves running is meant to outlive it.
    lifeboat_core::process::watchdog::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if fetching {
                WAL_FETCH_FAILED
            } else {
                exit_code(&e)
            };
            if args.json {
                let line = serde_json::json!({
                    "error": e.to_string(),
                    "kind": e.kind(),
                    "exit_code": code,
                });
                eprintln!("{line}");
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(code)
        }
    }
}

/// The deadline of PostgreSQL's archive commands (`[wal] push_timeout_secs`,
/// `fetch_timeout_secs`): the whole command, retries included.
fn archive_deadline(ctx: &Context, command: &cli::Command) -> Option<(&'static str, u64)> {
    match command {
        cli::Command::WalPush { .. } => Some(("wal-push", ctx.config.wal.push_timeout_secs)),
        cli::Command::WalFetch { .. } => Some(("wal-fetch", ctx.config.wal.fetch_timeout_secs)),
        _ => None,
    }
}

/// Runs `work` for at most `limit`; past it, stops it as a signal would (uploads aborted,
/// nothing committed), gives it [`STOP_GRACE`] to clean up, and fails naming the deadline.
async fn within(
    ctx: &Context,
    (what, seconds): (&'static str, u64),
    work: impl std::future::Future<Output = lifeboat_core::Result<()>>,
) -> lifeboat_core::Result<()> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(std::time::Duration::from_secs(seconds)) => {}
    }
    ctx.cancel.cancel();
    let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
    Err(lifeboat_core::Error::TimedOut {
        what: format!("`{what}`"),
        seconds,
        hint: match what {
            "wal-push" => "the storage did not answer in time: nothing was stored, and PostgreSQL tries the segment again (`[wal] push_timeout_secs`)",
            _ => "the storage did not answer in time: recovery stops here instead of ending (`[wal] fetch_timeout_secs`)",
        }
        .into(),
    })
}

/// Refuses `--from` for a command that does not read backups.
fn reads_from_copy(command: &cli::Command) -> lifeboat_core::Result<()> {
    use cli::{Command, RestoreCommand};
    match command {
        Command::List { .. }
        | Command::Show { .. }
        | Command::Status { .. }
        | Command::Restore(RestoreCommand::Db(_) | RestoreCommand::Pitr(_) | RestoreCommand::Table(_))
        | Command::Verify { .. }
        | Command::WalFetch { .. }
        | Command::WalPrefetch { .. }
        | Command::Wal(_)
        | Command::Prune { .. }
        | Command::Undelete { .. } => Ok(()),
        _ => Err(lifeboat_core::Error::Usage(
            "`--from` reads from a copy of the repository: it is for `list`, `show`, `status`, `restore db|pitr|table`, `verify`, `wal find`, `wal-fetch`, `prune` and `undelete`; drop it here"
                .into(),
        )),
    }
}

/// The exit code of a failed command, by the kind of its error (listed in `--help`): 75 is
/// sysexits' EX_TEMPFAIL, which cron wrappers and systemd's `RestartForceExitStatus=` know.
fn exit_code(e: &lifeboat_core::Error) -> u8 {
    use lifeboat_core::Error;
    match e {
        Error::Interrupted(_) => 130,
        Error::NotStarted { cause, .. } => exit_code(cause),
        e if e.is_damage() => 3,
        Error::Breached(_) => 4,
        Error::Busy { .. } => 5,
        Error::NotARepository { .. } => 6,
        e if e.is_temporary() => 75,
        _ => 1,
    }
}

fn init_logging(args: &cli::Cli) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("warn,lifeboat={default},lifeboat_core={default}"))
    });
    let on_terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(on_terminal && args.log_format == cli::LogFormat::Text);
    if args.log_format == cli::LogFormat::Json {
        builder.json().flatten_event(true).init();
    } else if on_terminal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// The first SIGINT or SIGTERM asks the engine to stop cleanly; a second one exits at once.
fn watch_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("stopping: cleaning up (signal again to exit at once)");
        cancel.cancel();
        // Cleaning up is tried, not waited for without end: storage that does not answer
        // must not keep a stopping command alive.
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
            () = tokio::time::sleep(STOP_GRACE) => {
                tracing::warn!("stopping: clean-up did not end within {} s; exiting", STOP_GRACE.as_secs());
            },
        }
        std::process::exit(130);
    });
}

/// Removes what killed lifeboats left in the temporary folder, saying so; not on PostgreSQL's
/// hot paths (`wal-push`, `wal-fetch`), which must stay quick.
fn sweep_leftovers(args: &cli::Cli, ctx: &Context) {
    use cli::Command as C;
    if matches!(
        args.command,
        C::WalPush { .. } | C::WalFetch { .. } | C::WalPrefetch { .. } | C::WalPushAhead { .. }
    ) {
        return;
    }
    let removed = lifeboat_core::postgres::leftovers::sweep(
        &std::env::temp_dir(),
        &ctx.tools,
        std::time::SystemTime::now(),
    );
    for path in removed {
        tracing::warn!(
            "removed `{}`, left over a day ago by a lifeboat that was stopped before it could clean up",
            path.display()
        );
    }
}
