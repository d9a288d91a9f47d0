//! Children that die with lifeboat, however lifeboat dies.
//!
//! Each child (pg_dump, pg_restore and the workers it forks, psql, a scratch server) runs in
//! a process group of its own, registered with a watchdog: a second lifeboat process started
//! once, reading a pipe from this one. Stopped cleanly, lifeboat stops its children itself;
//! killed (SIGKILL, the OOM killer), its end of the pipe closes, and the watchdog kills every
//! group still registered, so that no pg_restore worker carries on into a database
//! unsupervised and no scratch server outlives the command that started it. (PostgreSQL's
//! usual answer, `PR_SET_PDEATHSIG`, needs code between fork and exec, which lifeboat, in
//! safe Rust only, does not run; and it would not reach the workers pg_restore forks.)
//!
//! A group is registered once its leader is spawned and released once it is reaped, so that
//! the watchdog never kills a number that another process may have been given since.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// How to start the watchdog: the program and its arguments (the CLI: itself, `watchdog`).
static PROGRAM: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();
/// The pipe to the running watchdog, once one is started; `None` inside when it could not be.
static PIPE: Mutex<Option<Option<ChildStdin>>> = Mutex::new(None);

/// Says how to start the watchdog; until then (unit tests), children run unwatched.
pub fn install(program: PathBuf, args: Vec<OsString>) {
    let _ = PROGRAM.set((program, args));
}

/// Spawns `cmd` as the leader of a process group of its own, registered with the watchdog.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn()?;
    tell(&format!("+{}\n", child.id()));
    Ok(child)
}

/// Watches the process group of `leader`, which lifeboat did not spawn itself (a server
/// that `pg_ctl` started in a session of its own: its pid is its group's).
pub fn watch(leader: u32) {
    tell(&format!("+{leader}\n"));
}

/// Forgets the group of `leader`, which has been reaped (or whose group is gone).
pub fn release(leader: u32) {
    tell(&format!("-{leader}\n"));
}

/// Says that this process is ending in order: what it leaves running is meant to outlive
/// it, and nothing is killed.
pub fn finish() {
    tell("exit\n");
}

/// Kills the process group of `leader` (the leader and what it forked).
pub fn kill_group(leader: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(leader as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn tell(line: &str) {
    let Some((program, args)) = PROGRAM.get() else {
        return;
    };
    let mut pipe = PIPE.lock().expect("watchdog pipe poisoned");
    if pipe.is_none() && line == "exit\n" {
        return;
    }
    if pipe.is_none() {
        *pipe = Some(start(program, args));
    }
    if let Some(Some(stdin)) = pipe.as_mut() {
        if stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            tracing::debug!("the watchdog is gone: children are no longer watched");
            *pipe = Some(None);
        }
    }
}

fn start(program: &PathBuf, args: &[OsString]) -> Option<ChildStdin> {
    use std::os::unix::process::CommandExt;
    let started = Command::new(program)
        .args(args)
        // It needs nothing of lifeboat's environment, which may hold secrets.
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of the terminal's reach, so that Ctrl-C does not stop it first.
        .process_group(0)
        .spawn();
    match started {
        // Never waited for: it outlives this process by design, and init reaps it.
        Ok(mut child) => child.stdin.take(),
        Err(e) => {
            tracing::warn!("cannot start the watchdog (`{}`): children of a killed lifeboat may outlive it: {e}", program.display());
            None
        }
    }
}

/// The watchdog's own work: read `+PID` and `-PID` lines until the pipe closes, then kill
/// the groups still registered, unless lifeboat said `exit` (it ended in order).
pub fn run(input: impl io::Read) {
    let mut live: Vec<u32> = Vec::new();
    for line in io::BufReader::new(input).lines() {
        let Ok(line) = line else { break };
        if line == "exit" {
            return;
        }
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pid) = number.trim().parse::<u32>() else {
            continue;
        };
        match sign {
            "+" => live.push(pid),
            "-" => live.retain(|p| *p != pid),
            _ => {}
        }
    }
    for pid in live {
        kill_group(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orderly_end_kills_nothing() {
        let mut kept = Command::new("sleep").arg("30").spawn_grouped();
        run(format!("+{}\nexit\n", kept.id()).as_bytes());
        assert!(kept.try_wait().unwrap().is_none());
        kill_group(kept.id());
        kept.wait().unwrap();
    }

    #[test]
    fn registered_groups_are_killed_when_the_pipe_closes() {
        let mut kept = Command::new("sleep").arg("30").spawn_grouped();
        let mut gone = Command::new("sleep").arg("30").spawn_grouped();
        let input = format!("+{}\n+{}\n-{}\n", gone.id(), kept.id(), kept.id());
        run(input.as_bytes());
        let status = gone.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(
            kept.try_wait().unwrap().is_none(),
            "a released group was killed"
        );
        kill_group(kept.id());
        kept.wait().unwrap();
    }

    trait SpawnGrouped {
        fn spawn_grouped(&mut self) -> Child;
    }

    impl SpawnGrouped for Command {
        fn spawn_grouped(&mut self) -> Child {
            use std::os::unix::process::CommandExt;
            self.process_group(0).spawn().unwrap()
        }
    }
}
