//! The data folder of a recovery: checked empty, the base backup unpacked into it (in
//! parallel, cleared again if that fails), the recovery settings written, and handed to the
//! user the server runs as.

use std::path::Path;

use super::{PitrRequest, Target, TargetAction};
use crate::error::{Error, Result};
use crate::pipeline;
use crate::repository::keys::identities_for;
use crate::repository::manifest::Manifest;
use crate::repository::Repository;
use crate::tarchunk;
use crate::wal;
use crate::Context;

/// Restores `chain` (a full base backup, then its incrementals in order) into the request's
/// data folder: the full one unpacked in parallel, each incremental applied onto it in turn
/// (see [`tarchunk::incremental`]). The chain is checked whole before anything is written;
/// on failure (or a stop) the folder is left as it was.
pub(super) async fn unpack(
    ctx: &Context,
    repo: &Repository,
    chain: &[Manifest],
    request: &PitrRequest,
) -> Result<()> {
    crate::postgres::incremental::check_chain(ctx, repo, chain, request.identity.as_deref())
        .await?;
    let existed = request.pgdata.exists();
    std::fs::create_dir_all(&request.pgdata)
        .map_err(|e| Error::io(format!("creating `{}`", request.pgdata.display()), e))?;
    let restored = async {
        unpack_full(ctx, repo, &chain[0], request).await?;
        for link in &chain[1..] {
            apply_incremental(ctx, repo, link, request).await?;
        }
        if chain.len() > 1 {
            tarchunk::incremental::finish_chain(&request.pgdata)
                .map_err(|e| Error::io("finishing the restored chain", e))?;
        }
        if ctx.cancel.is_cancelled() {
            return Err(Error::Interrupted("restore stopped".into()));
        }
        Ok(())
    }
    .await;
    if restored.is_err() {
        // The folder was empty: what is in it now is a partial copy, of no use to anyone.
        clear_folder(&request.pgdata, existed);
    }
    restored
}

/// Applies incremental `link` onto the folder, which holds its parent restored.
async fn apply_incremental(
    ctx: &Context,
    repo: &Repository,
    link: &Manifest,
    request: &PitrRequest,
) -> Result<()> {
    let identities = identities_for(&ctx.config, link, request.identity.as_deref())?;
    let task = ctx
        .progress
        .start(&format!("apply {}", link.id), Some(link.raw_size));
    let dest = request.pgdata.clone();
    let threads = unpack_threads(ctx);
    let applied = pipeline::download_sealed(
        repo.storage(),
        &link.data,
        &link.expected(),
        identities,
        move |stored| {
            // The chunk descriptions are skippable frames: one decoder reads the whole tar.
            let raw = zstd::stream::read::Decoder::new(stored)?;
            tarchunk::incremental::apply_incremental(raw, &dest, threads, &task)
        },
        &ctx.cancel,
    )
    .await?;
    tracing::info!(
        backup = %link.id,
        relation_files = applied.incremental_files,
        blocks = applied.blocks,
        whole_files = applied.whole_files,
        removed = applied.removed,
        "incremental applied"
    );
    Ok(())
}

/// Unpacks full base backup `base` into the folder.
async fn unpack_full(
    ctx: &Context,
    repo: &Repository,
    base: &Manifest,
    request: &PitrRequest,
) -> Result<()> {
    let identities = identities_for(&ctx.config, base, request.identity.as_deref())?;
    let task = ctx
        .progress
        .start(&format!("restore {}", base.id), Some(base.raw_size));
    let dest = request.pgdata.clone();
    let threads = unpack_threads(ctx);
    let unpacked = pipeline::download_sealed(
        repo.storage(),
        &base.data,
        &base.expected(),
        identities,
        move |stored| tarchunk::unpack(stored, &dest, threads, &task),
        &ctx.cancel,
    )
    .await?;
    tracing::info!(
        chunks = unpacked.chunks,
        bytes = unpacked.raw_size,
        threads,
        "base backup unpacked"
    );
    Ok(())
}

/// Threads that unpack a base backup: the configured compression threads, else one per core.
pub(super) fn unpack_threads(ctx: &Context) -> usize {
    match ctx.config.compression.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

/// Removes a partly restored data folder's contents, and the folder itself unless it existed.
pub(super) fn clear_folder(dir: &Path, existed: bool) {
    let cleared = if existed {
        std::fs::read_dir(dir).and_then(|entries| {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    } else {
        std::fs::remove_dir_all(dir)
    };
    if let Err(e) = cleared {
        tracing::warn!(folder = %dir.display(), error = %e, "could not clear the partly restored folder");
    }
}

pub(super) fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(Error::NotReady(format!(
                    "`{}` is not empty: restore into an empty or new folder (lifeboat never overwrites a data folder)",
                    dir.display()
                )))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("cannot read data folder `{}`", dir.display()),
            e,
        )),
    }
}

/// `recovery.signal` and the settings of the recovery: how WAL is fetched, the target, the
/// timeline (by number: the plan's, never PostgreSQL's own `latest`), and archiving off unless
/// the server is to be the new primary.
pub(super) fn write_recovery_settings(
    request: &PitrRequest,
    plan: &super::Plan,
    config_file: &Path,
) -> Result<()> {
    let timeline = plan.timeline;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the lifeboat program", e))?;
    let quote = |s: &str| s.replace('\'', "''");
    let mut lines = vec![
        String::new(),
        "# written by lifeboat restore pitr".into(),
        // The archive of the base backup's cluster and generation, by name: another
        // generation's segments have the same names.
        format!(
            "restore_command = '{} --config {} -q wal-fetch --db {} --generation {} %f %p'",
            quote(&exe.display().to_string()),
            quote(&config_file.display().to_string()),
            plan.cluster,
            plan.generation.generation
        ),
        format!("recovery_target_timeline = '{timeline}'"),
    ];
    match &request.target {
        Target::Time(t) => lines.push(format!(
            "recovery_target_time = '{}'",
            t.strftime("%Y-%m-%d %H:%M:%S%.6f+00")
        )),
        Target::Lsn(lsn) => {
            lines.push(format!("recovery_target_lsn = '{}'", wal::format_lsn(*lsn)))
        }
        Target::Latest => {}
        Target::Immediate => lines.push("recovery_target = 'immediate'".into()),
        Target::Name(name, _) => lines.push(format!("recovery_target_name = '{}'", quote(name))),
        Target::BeforeXid(xid, _) => {
            lines.push(format!("recovery_target_xid = '{xid}'"));
            lines.push("recovery_target_inclusive = off".into());
        }
    }
    if !matches!(request.target, Target::Latest) {
        let action = match request.action {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
        };
        lines.push(format!("recovery_target_action = '{action}'"));
    }
    if !request.as_primary {
        lines
            .push("# a practice recovery: it never archives (`--promote-as-primary` would)".into());
        lines.push("archive_mode = 'off'".into());
    }
    if request.throwaway {
        lines.extend(super::throwaway::settings(&request.pgdata)?);
    }
    let auto = request.pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&auto, text)
        .map_err(|e| Error::io(format!("writing `{}`", auto.display()), e))?;
    std::fs::write(request.pgdata.join("recovery.signal"), b"")
        .map_err(|e| Error::io("writing recovery.signal", e))?;
    Ok(())
}

pub(super) fn prepare_permissions(pgdata: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("setting the mode of `{}`", pgdata.display()), e))?;
    if let Some((uid, gid)) = owner {
        let mut stack = vec![pgdata.to_path_buf()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| {
                Error::io(
                    format!("handing `{}` to the server's user", path.display()),
                    e,
                )
            })?;
            if path.is_dir() && !path.is_symlink() {
                for entry in std::fs::read_dir(&path)
                    .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?
                    .flatten()
                {
                    stack.push(entry.path());
                }
            }
        }
    }
    Ok(())
}
