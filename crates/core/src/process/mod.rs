//! Child processes (pg_dump, pg_restore, ...) as `Read` and `Write` ends of a pipeline.
//!
//! Modelled on ripgrep's `CommandReader`: stderr is drained on a thread (so a chatty child
//! never blocks), and the exit status is checked when the stream ends, so a dump that ended
//! badly surfaces as an error at the very point the pipeline would otherwise have committed.
//! A child still running when its handle is dropped is killed and reaped.
//!
//! Connection secrets are passed through the environment or a password file, never in
//! arguments; [`Tool`] keeps the arguments it is given so that tests can check exactly that.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{one_line, Error, Result};

pub mod tools;
pub mod unnamed;
pub mod watchdog;

pub use unnamed::Unnamed;

/// This machine's name, for lock files and reports.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What tells a process apart on its host beyond its pid: the host's boot, its pid namespace
/// (a container of the same host name has its own) and its start time, so that a record of
/// it is judged dead from this machine only where that can be told, never for a reused pid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessMark {
    pub boot_id: String,
    pub pid_namespace: String,
    /// Clock ticks after boot at which it started (`/proc/PID/stat`, field 22).
    pub start_ticks: u64,
}

impl ProcessMark {
    /// This process's mark, where `/proc` tells it.
    pub fn of_this_process() -> Option<ProcessMark> {
        Some(ProcessMark {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()?
                .trim()
                .to_string(),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()?
                .display()
                .to_string(),
            start_ticks: start_ticks(std::process::id())?,
        })
    }

    /// Whether process `pid`, which had this mark, is gone: `None` when that cannot be told
    /// from here (another boot of the host, another pid namespace, no `/proc`).
    pub fn is_gone(&self, pid: u32) -> Option<bool> {
        let here = ProcessMark::of_this_process()?;
        if here.boot_id != self.boot_id || here.pid_namespace != self.pid_namespace {
            return None;
        }
        Some(start_ticks(pid) != Some(self.start_ticks))
    }
}

/// When process `pid` started, in clock ticks after boot; `None` when there is no such process.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold anything: count from its end.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The most of a child's stderr that is kept (its tail).
const STDERR_KEEP: usize = 64 * 1024;

/// A command to run: a program, arguments and environment.
#[derive(Debug, Clone)]
pub struct Tool {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
}

impl Tool {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Tool {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }

    /// The command, with an environment of only what the tools need: lifeboat's own
    /// environment may hold secrets (`${VAR}` values of the configuration) that a child has no
    /// business seeing.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).env_clear();
        for (key, value) in std::env::vars_os() {
            if key.to_str().is_some_and(inherited) {
                cmd.env(key, value);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs to completion and returns stdout; a non-zero exit is an error carrying stderr.
    pub fn output(&self) -> Result<Vec<u8>> {
        let child = watchdog::spawn(
            self.command()
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| spawn_error(&self.program, e))?;
        let leader = child.id();
        let out = child.wait_with_output();
        watchdog::release(leader);
        let out = out.map_err(|e| Error::io(format!("waiting for `{}`", self.name()), e))?;
        check_status(
            &self.name(),
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        )?;
        Ok(out.stdout)
    }

    /// Starts the child with its stdout as a stream.
    pub fn spawn_reader(&self) -> Result<ChildReader> {
        let mut child = watchdog::spawn(
            self.command()
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| spawn_error(&self.program, e))?;
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = StderrTail::drain(&mut child);
        Ok(ChildReader {
            name: self.name(),
            child: Arc::new(Mutex::new(Some(child))),
            stdout: Some(stdout),
            stderr,
        })
    }

    /// Starts the child with both ends piped: its stdin to write to, its stdout to read from
    /// (checked for a successful exit at its end).
    pub fn spawn_filter(&self) -> Result<(ChildStdin, ChildReader)> {
        let mut child = watchdog::spawn(
            self.command()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| spawn_error(&self.program, e))?;
        let stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = StderrTail::drain(&mut child);
        Ok((
            stdin,
            ChildReader {
                name: self.name(),
                child: Arc::new(Mutex::new(Some(child))),
                stdout: Some(stdout),
                stderr,
            },
        ))
    }

    /// Starts the child with its stdin as a sink.
    pub fn spawn_writer(&self) -> Result<ChildWriter> {
        let mut child = watchdog::spawn(
            self.command()
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| spawn_error(&self.program, e))?;
        let stdin = child.stdin.take().expect("stdin piped");
        let stderr = StderrTail::drain(&mut child);
        Ok(ChildWriter {
            name: self.name(),
            child: Arc::new(Mutex::new(Some(child))),
            stdin: Some(stdin),
            stderr,
        })
    }
}

/// Environment variables a child inherits: locale, paths, and libpq's settings other than
/// the password (which lifeboat passes through a password file when it has one).
fn inherited(key: &str) -> bool {
    matches!(
        key,
        "PATH" | "HOME" | "USER" | "LOGNAME" | "LANG" | "TZ" | "TMPDIR" | "LANGUAGE"
    ) || key.starts_with("LC_")
        || (key.starts_with("PG") && key != "PGPASSWORD")
}

/// How to get a program lifeboat runs.
fn install_hint(program: &Path) -> String {
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match name {
        "redis-cli" => "install Redis's command-line client (Debian: `apt install redis-tools`)".into(),
        "pg_dump" | "pg_restore" | "pg_basebackup" | "psql" => {
            "install the PostgreSQL client tools (Debian: `apt install postgresql-client`) or set `tools.pg_bin_dir`".into()
        }
        "initdb" | "postgres" | "pg_ctl" => {
            "install the PostgreSQL server programs (Debian: `apt install postgresql`) or set `tools.pg_bin_dir`".into()
        }
        _ => "install it, or put it on PATH".into(),
    }
}

pub(crate) fn spawn_error(program: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::ToolMissing {
            program: program.display().to_string(),
            install: install_hint(program),
        }
    } else {
        Error::io(format!("starting `{}`", program.display()), e)
    }
}

fn check_status(name: &str, status: ExitStatus, stderr: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let outcome = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".to_string(),
    };
    Err(Error::Tool {
        tool: name.to_string(),
        outcome,
        stderr: summarize_stderr(stderr),
    })
}

/// The lines of a tool's stderr that say what went wrong, as one line: errors, and which
/// table's `COPY` they stopped (psql's `CONTEXT:  COPY t, line 3: "row"`, without the row,
/// which may hold private data).
fn summarize_stderr(stderr: &str) -> String {
    let wanted: Vec<&str> = stderr
        .lines()
        .filter_map(|line| {
            let l = line.to_lowercase();
            if l.contains("error") || l.contains("fatal") || l.contains("failed") {
                return Some(line);
            }
            let copy = line.trim_start_matches("CONTEXT:").trim_start();
            (copy.starts_with("COPY ") && copy.contains(", line "))
                .then(|| copy.split_once(": \"").map_or(copy, |(at, _row)| at))
        })
        .collect();
    let text = if wanted.is_empty() {
        stderr
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        wanted
            .iter()
            .rev()
            .take(3)
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    one_line(&text)
}

/// The tail of a child's stderr, collected on a thread.
#[derive(Clone, Default)]
struct StderrTail {
    text: Arc<Mutex<Vec<u8>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl StderrTail {
    fn drain(child: &mut Child) -> StderrTail {
        let tail = StderrTail::default();
        if let Some(mut stderr) = child.stderr.take() {
            let text = tail.text.clone();
            let handle = std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut kept = text.lock().expect("stderr buffer poisoned");
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STDERR_KEEP {
                        let cut = kept.len() - STDERR_KEEP;
                        kept.drain(..cut);
                    }
                }
            });
            *tail.thread.lock().expect("stderr thread poisoned") = Some(handle);
        }
        tail
    }

    fn finish(&self) -> String {
        if let Some(handle) = self.thread.lock().expect("stderr thread poisoned").take() {
            let _ = handle.join();
        }
        String::from_utf8_lossy(&self.text.lock().expect("stderr buffer poisoned")).into_owned()
    }
}

/// A child's stdout as `Read`; end of stream is reported only after a successful exit.
pub struct ChildReader {
    name: String,
    child: SharedChild,
    stdout: Option<ChildStdout>,
    stderr: StderrTail,
}

/// A child that another thread may kill while its output is being read.
type SharedChild = Arc<Mutex<Option<Child>>>;

/// Kills a [`ChildReader`]'s or [`ChildWriter`]'s process from elsewhere (its reader may be
/// blocked in `read`, its writer in `write`).
#[derive(Clone)]
pub struct Killer(SharedChild);

impl Killer {
    pub fn kill(&self) {
        if let Some(child) = self.0.lock().expect("child poisoned").as_mut() {
            watchdog::kill_group(child.id());
        }
    }

    /// Kills the child when `cancel` fires, for as long as the guard lives: a thread blocked
    /// feeding or reading it then returns, and a stop is not held up by a slow child.
    pub fn on_cancel(self, cancel: &tokio_util::sync::CancellationToken) -> KillOnCancel {
        let cancel = cancel.clone();
        KillOnCancel(tokio::spawn(async move {
            cancel.cancelled().await;
            self.kill();
        }))
    }
}

/// See [`Killer::on_cancel`].
pub struct KillOnCancel(tokio::task::JoinHandle<()>);

impl Drop for KillOnCancel {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads what a [`ChildReader`]'s process wrote to stderr, once it has ended.
pub struct StderrHandle(StderrTail);

impl StderrHandle {
    pub fn text(&self) -> String {
        self.0.finish()
    }
}

impl ChildReader {
    pub fn stderr(&self) -> StderrHandle {
        StderrHandle(self.stderr.clone())
    }

    pub fn killer(&self) -> Killer {
        Killer(Arc::clone(&self.child))
    }

    fn finish(&mut self) -> Result<()> {
        self.stdout = None;
        let Some(mut child) = self.child.lock().expect("child poisoned").take() else {
            return Ok(());
        };
        let status =
            reap(&mut child).map_err(|e| Error::io(format!("waiting for `{}`", self.name), e))?;
        check_status(&self.name, status, &self.stderr.finish())
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Ok(0);
        };
        let n = stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().expect("child poisoned").take() {
            kill_and_reap(&mut child);
        }
    }
}

/// Waits until process `pid`, a child, has ended, without reaping it.
fn await_exit(pid: u32) {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    while let Err(rustix::io::Errno::INTR) = waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    ) {}
}

/// Waits for a child and releases its group from the watchdog.
fn reap(child: &mut Child) -> io::Result<ExitStatus> {
    let status = child.wait();
    watchdog::release(child.id());
    status
}

/// Kills a child's whole group (what it forked too), waits for it, releases it.
fn kill_and_reap(child: &mut Child) {
    watchdog::kill_group(child.id());
    let _ = reap(child);
}

/// A child's stdin as `Write`. [`ChildWriter::finish`] closes it and checks the exit status;
/// dropping it unfinished kills the child, so a half-fed restore never commits.
pub struct ChildWriter {
    name: String,
    child: SharedChild,
    stdin: Option<ChildStdin>,
    stderr: StderrTail,
}

impl ChildWriter {
    /// Closes stdin and waits for the child; its failure is an error carrying its stderr.
    pub fn finish(mut self) -> Result<()> {
        self.stdin = None;
        // Ended but not reaped, the child keeps its pid: a killer can still stop it meanwhile.
        let pid = self
            .child
            .lock()
            .expect("child poisoned")
            .as_ref()
            .map(Child::id);
        if let Some(pid) = pid {
            await_exit(pid);
        }
        let mut child = self
            .child
            .lock()
            .expect("child poisoned")
            .take()
            .expect("child present until finished");
        let status =
            reap(&mut child).map_err(|e| Error::io(format!("waiting for `{}`", self.name), e))?;
        check_status(&self.name, status, &self.stderr.finish())
    }

    /// Kills the child, which stopped taking its input, and says so with what it said.
    pub fn stopped(self, outcome: impl Into<String>) -> Error {
        let tool = self.name.clone();
        Error::Tool {
            tool,
            outcome: outcome.into(),
            stderr: self.kill(),
        }
    }

    /// Kills the child (it must not finish its work) and returns what it said.
    pub fn kill(self) -> String {
        if let Some(mut child) = self.child.lock().expect("child poisoned").take() {
            kill_and_reap(&mut child);
        }
        summarize_stderr(&self.stderr.finish())
    }

    /// Kills the child from elsewhere: a `write` blocked on it then fails.
    pub fn killer(&self) -> Killer {
        Killer(Arc::clone(&self.child))
    }
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write(buf),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().expect("child poisoned").take() {
            kill_and_reap(&mut child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failed_copy_names_its_table_and_line_but_not_the_row() {
        let said = "psql:<stdin>:5: ERROR:  new row for relation \"pk\" violates check constraint \"pk_id_check\"\n\
                    DETAIL:  Failing row contains (secret@example.com).\n\
                    CONTEXT:  COPY pk, line 3: \"secret@example.com\"\n";
        let summary = summarize_stderr(said);
        assert!(summary.contains("violates check constraint"), "{summary}");
        assert!(summary.ends_with("; COPY pk, line 3"), "{summary}");
        assert!(!summary.contains("secret"), "{summary}");
        // Raised in a function: the COPY is on a line of its own.
        let said = "psql:<stdin>:9: ERROR:  row 5000 refused\n\
                    CONTEXT:  PL/pgSQL function refuse(integer) line 1 at RAISE\n\
                    COPY picky, line 5000: \"5000\"\n";
        assert_eq!(
            summarize_stderr(said),
            "psql:<stdin>:9: ERROR:  row 5000 refused; COPY picky, line 5000"
        );
    }

    #[test]
    fn reader_reports_failure_at_end_of_stream() {
        let mut ok = Tool::new("sh")
            .args(["-c", "printf hello"])
            .spawn_reader()
            .unwrap();
        let mut out = String::new();
        ok.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello");

        let mut bad = Tool::new("sh")
            .args([
                "-c",
                "printf partial; echo 'pg_dump: error: boom' >&2; exit 1",
            ])
            .spawn_reader()
            .unwrap();
        let mut out = String::new();
        let err = bad.read_to_string(&mut out).unwrap_err();
        assert_eq!(out, "partial");
        let text = err.to_string();
        assert!(text.contains("status 1") && text.contains("boom"), "{text}");
    }

    #[test]
    fn writer_checks_status_and_missing_program_is_clear() {
        let mut w = Tool::new("sh")
            .args(["-c", "cat >/dev/null; exit 2"])
            .spawn_writer()
            .unwrap();
        w.write_all(b"data").unwrap();
        assert!(w.finish().unwrap_err().to_string().contains("status 2"));
        let err = Tool::new("/nonexistent/pg_dump")
            .output()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`/nonexistent/pg_dump` not found"), "{err}");
    }

    /// A writer blocked on a child that reads nothing, and one waiting for a child to end,
    /// both return once the child is killed from elsewhere.
    #[test]
    fn a_killed_writer_child_unblocks_its_writer_and_its_finish() {
        for finishing in [false, true] {
            let mut w = Tool::new("sleep").arg("60").spawn_writer().unwrap();
            let killer = w.killer();
            let (done, said) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let outcome = if finishing {
                    w.finish().map_err(|e| e.to_string())
                } else {
                    // More than a pipe holds: blocks until the child is gone.
                    w.write_all(&vec![0u8; 4 << 20]).map_err(|e| e.to_string())
                };
                let _ = done.send(outcome);
            });
            std::thread::sleep(Duration::from_millis(200));
            assert!(said.try_recv().is_err(), "returned before the kill");
            killer.kill();
            let outcome = said
                .recv_timeout(Duration::from_secs(20))
                .expect("still blocked after the kill");
            assert!(outcome.is_err(), "finishing {finishing}: {outcome:?}");
        }
    }
}
