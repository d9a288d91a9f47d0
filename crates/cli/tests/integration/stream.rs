//! `wal-stream`: WAL streamed from a replication slot into the repository, compared byte for
//! byte with `pg_receivewal`'s, through faults (lifeboat killed, the connection cut, the
//! storage hanging), and recovered from after the server is destroyed: asynchronously up to
//! the last streamed byte, synchronously with every acknowledged commit.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_testkit::{Fault, Rule};

use crate::pitr::{archiving_env, recover_and_start, sql_at};
use crate::support::{tools, wait_until, Env};

fn client(env: &Env, program: &str) -> Command {
    let mut cmd = Command::new(tools().path(program));
    cmd.env("PGHOST", env.cluster.socket_dir())
        .env("PGPORT", env.cluster.port().to_string())
        .env("PGUSER", "lifeboat")
        .env("PGDATABASE", "yomira");
    cmd
}

fn sql(env: &Env, sql: &str) -> String {
    sql_at(env.cluster.socket_dir(), env.cluster.port(), sql)
}

fn add_config(env: &mut Env, text: &str) {
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!("{config}{text}"));
}

/// The stream's flush position (`pg_receivewal`'s write position: it reports flushes at the
/// end of segments only) has reached the server's current WAL position.
fn wait_streamed(env: &Env, application: &str, what: &str) {
    let column = if application == "lifeboat" {
        "flush_lsn"
    } else {
        "write_lsn"
    };
    let target = sql(env, "SELECT pg_current_wal_insert_lsn()");
    wait_until(Duration::from_secs(60), what, || {
        sql(
            env,
            &format!(
                "SELECT coalesce(bool_or({column} >= '{target}'), false) FROM pg_stat_replication WHERE application_name = '{application}'"
            ),
        ) == "t"
    });
}

fn stream(env: &Env) -> Child {
    let child = env.start(&["wal-stream"]);
    wait_until(Duration::from_secs(30), "the stream to start", || {
        sql(
            env,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat' AND state = 'streaming'",
        ) == "1"
    });
    child
}

fn kill(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pg_receivewal` into `dir` from a slot of its own: the reference.
fn receivewal(env: &Env, dir: &Path) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let created = client(env, "pg_receivewal")
        .args(["--create-slot", "--slot", "reference", "--if-not-exists"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let child = client(env, "pg_receivewal")
        .args(["-D", dir.to_str().unwrap(), "--slot", "reference", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "pg_receivewal to start", || {
        sql(
            env,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg_receivewal'",
        ) == "1"
    });
    child
}

fn insert(env: &Env, from: u32, to: u32) {
    sql(
        env,
        &format!("INSERT INTO public.stamps SELECT g FROM generate_series({from}, {to}) g"),
    );
}

/// An archiving cluster with a table `public.stamps`, `[wal]` settings `wal` and a base
/// backup.
fn streaming_env(wal: &str) -> Env {
    let mut env = archiving_env();
    add_config(&mut env, &format!("[wal]\n{wal}"));
    sql(&env, "CREATE TABLE public.stamps (id int PRIMARY KEY)");
    let out = env.lifeboat(&["backup", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    env
}

/// A socket folder the recovered server (another user when the tests run as root) can use.
fn socket_for_recovery(env: &Env) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let socket = env.dir.path().join("sock");
    std::fs::create_dir_all(&socket).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
}

/// Objects under `stream/` in the repository.
fn pieces(env: &Env) -> Vec<String> {
    env.stored_files()
        .into_iter()
        .filter(|k| k.contains("stream/"))
        .collect()
}

#[test]
fn streamed_wal_equals_pg_receivewal_through_faults_and_recovers_to_the_last_byte() {
    let mut env = streaming_env("stream_flush_ms = 200\n");
    let proxy = env.behind_proxy(5, 20);

    let reference = env.dir.path().join("reference");
    let mut receiver = receivewal(&env, &reference);
    let dry = env.lifeboat(&["wal-stream", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let forecast: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(
        forecast["slot_status"],
        serde_json::Value::Null,
        "{forecast}"
    );
    assert!(
        forecast["forecast"]["requests_per_month"].is_u64(),
        "{forecast}"
    );

    let mut streamer = stream(&env);
    assert!(client(&env, "pgbench")
        .args(["-i", "-q", "-s", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    insert(&env, 1, 100);

    // lifeboat killed mid-stream, WAL written meanwhile, started again: it resumes from
    // the slot.
    for round in 0..3u32 {
        let _ = kill(streamer);
        insert(&env, 1000 + round * 100, 1000 + round * 100 + 50);
        sql(&env, "SELECT pg_switch_wal()");
        insert(&env, 2000 + round * 100, 2000 + round * 100 + 50);
        streamer = stream(&env);
        insert(&env, 3000 + round * 100, 3000 + round * 100 + 50);
    }
    // The connection cut by the server.
    sql(
        &env,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'lifeboat'",
    );
    insert(&env, 4000, 4100);
    wait_streamed(
        &env,
        "lifeboat",
        "the stream back after its connection was cut",
    );

    // The storage hangs for 60 s: nothing is lost, the stream catches up after.
    proxy.set(vec![Rule::all(Fault::Hang).method("PUT")]);
    let hang = Instant::now();
    while hang.elapsed() < Duration::from_secs(60) {
        insert(
            &env,
            5000 + hang.elapsed().as_secs() as u32 * 10,
            5000 + hang.elapsed().as_secs() as u32 * 10 + 5,
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(proxy.faulted() > 0, "the storage never hung");
    proxy.clear();
    insert(&env, 9000, 9000);
    wait_streamed(&env, "lifeboat", "the stream after the storage came back");
    wait_streamed(&env, "pg_receivewal", "pg_receivewal");
    std::thread::sleep(Duration::from_secs(1));

    // Every segment, whole or in progress, is pg_receivewal's byte for byte.
    let mut compared = 0;
    let mut partial = 0;
    let mut names: Vec<String> = std::fs::read_dir(&reference)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let first_streamed = names.first().cloned().unwrap();
    for file in &names {
        let name = file.trim_end_matches(".partial");
        let expected = std::fs::read(reference.join(file)).unwrap();
        let (out, fetched) = env.fetch_wal(name);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let fetched = fetched.unwrap();
        assert!(fetched == expected, "{name} differs from pg_receivewal's");
        compared += 1;
        if file.ends_with(".partial") {
            partial += 1;
        }
    }
    assert!(
        compared >= 5 && partial == 1,
        "{compared} compared ({names:?})"
    );
    // No segment stored twice: pieces remain of the segment in progress only.
    let current = names
        .last()
        .unwrap()
        .trim_end_matches(".partial")
        .to_string();
    let left = pieces(&env);
    assert!(!left.is_empty(), "the segment in progress has no pieces");
    assert!(
        left.iter().all(|k| k.contains(&current)),
        "pieces of whole segments left: {left:?} (current {current}, first {first_streamed})"
    );
    let _ = receiver.kill();
    let _ = receiver.wait();

    // The server destroyed: recovery reaches the last streamed commit, which no archived
    // segment holds.
    env.cluster.crash().unwrap();
    let stderr = kill(streamer);
    assert!(
        !stderr.contains(crate::support::S3_SECRET),
        "the secret in the log"
    );
    std::fs::remove_dir_all(env.cluster.data_dir()).unwrap();
    let socket = socket_for_recovery(&env);
    let (out, server) = recover_and_start(&env, "recovered", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &socket,
            server.port,
            "SELECT count(*) FROM public.stamps WHERE id = 9000"
        ),
        "1",
        "the last streamed commit is not recovered"
    );
}

#[test]
fn a_synchronous_stream_loses_no_acknowledged_commit() {
    let env = streaming_env("stream_sync = true\n");
    sql(
        &env,
        "ALTER SYSTEM SET synchronous_standby_names = 'lifeboat'",
    );
    sql(&env, "ALTER SYSTEM SET synchronous_commit = 'remote_apply'");
    sql(&env, "SELECT pg_reload_conf()");
    // A commit would wait forever: refused, in one line.
    let out = env.lifeboat(&["wal-stream"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.error_line().contains("remote_apply"), "{}", out.stderr);
    sql(&env, "ALTER SYSTEM SET synchronous_commit = 'on'");
    sql(&env, "SELECT pg_reload_conf()");
    let streamer = stream(&env);
    wait_until(
        Duration::from_secs(30),
        "the stream to be synchronous",
        || {
            sql(
                &env,
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'lifeboat'",
            ) == "sync"
        },
    );
    let load = client(&env, "pgbench")
        .args(["-i", "-q", "-s", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(load.success());
    let mut bench = client(&env, "pgbench")
        .args(["-c", "4", "-T", "60", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // One client commits a row at a time and records each commit acknowledged.
    let mut psql = client(&env, "psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for id in 1..100_000u32 {
            if writeln!(
                stdin,
                "INSERT INTO public.stamps VALUES ({id});\n\\echo {id}"
            )
            .is_err()
            {
                return;
            }
        }
    });
    let stdout = psql.stdout.take().unwrap();
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<u32>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(id) = line.trim().parse() {
                let _ = acked_tx.send(id);
            }
        }
    });
    // The server destroyed at a moment of the test's choosing, mid-commit, lifeboat with it
    // (first: what it received and had not stored dies with it).
    let moment = Duration::from_millis(1500 + u64::from(std::process::id() % 2000));
    std::thread::sleep(moment);
    let _ = kill(streamer);
    env.cluster.crash().unwrap();
    let _ = bench.wait();
    let _ = psql.wait();
    let _ = writer.join();
    let acked: Vec<u32> = acked_rx.try_iter().collect();
    assert!(
        acked.len() > 10,
        "only {} commits acknowledged",
        acked.len()
    );
    std::fs::remove_dir_all(env.cluster.data_dir()).unwrap();
    let socket = socket_for_recovery(&env);
    let (out, server) = recover_and_start(&env, "recovered", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let last = acked.iter().max().unwrap();
    let recovered = sql_at(
        &socket,
        server.port,
        &format!("SELECT count(*) FROM public.stamps WHERE id <= {last}"),
    );
    assert_eq!(
        recovered,
        last.to_string(),
        "acknowledged commits lost (last acknowledged {last})"
    );
}

#[test]
fn the_stream_follows_a_recovery_that_becomes_the_new_primary() {
    let mut env = streaming_env("stream_flush_ms = 200\n");
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&config.replace("[postgres.main]\n", "[postgres.main]\npitr = true\n"));
    let first = stream(&env);
    insert(&env, 1, 100);
    wait_streamed(&env, "lifeboat", "the first timeline streamed");
    // `status` shows the stream, and a slot nobody reads as a problem.
    let slot = |env: &Env| {
        let out = env.lifeboat(&["status", "--json"]);
        let assets: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let wal = assets
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "wal")
            .cloned()
            .unwrap_or_else(|| panic!("no wal asset: {}", out.stdout));
        (
            wal["archiver"]["stream"].clone(),
            wal["problems"].to_string(),
        )
    };
    let (streaming, _) = slot(&env);
    assert_eq!(streaming["active"], true, "{streaming}");
    assert!(streaming["retained_bytes"].is_i64(), "{streaming}");
    let _ = kill(first);
    wait_until(Duration::from_secs(10), "the slot released", || {
        sql(
            &env,
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'lifeboat'",
        ) == "f"
    });
    let (stopped, problems) = slot(&env);
    assert_eq!(stopped["active"], false, "{stopped}");
    assert!(
        problems.contains("nothing reads the WAL stream's slot"),
        "{problems}"
    );
    env.cluster.crash().unwrap();

    // The server lost; a recovery to the last streamed byte becomes the new primary.
    let socket = socket_for_recovery(&env);
    let (out, server) = recover_and_start(
        &env,
        "primary2",
        &socket,
        &["--latest", "--promote-as-primary"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(&socket, server.port, "SELECT count(*) FROM public.stamps"),
        "100",
        "{}",
        out.stderr
    );
    assert_eq!(
        sql_at(
            &socket,
            server.port,
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    // lifeboat now streams from it: a slot made there, the new timeline's history stored.
    let config = std::fs::read_to_string(&env.config).unwrap();
    let old = format!(
        "host={}&port={}",
        env.cluster.socket_dir().display(),
        env.cluster.port()
    );
    assert!(config.contains(&old), "{config}");
    env.write_config(&config.replace(
        &old,
        &format!("host={}&port={}", socket.display(), server.port),
    ));
    // Pieces of a segment stored whole since (a stream stopped before its segment was) are
    // removed when a stream starts; those of a segment stored nowhere else are kept.
    let orphan = "lifeboat/stream/wal/000000010000000000000002/00000000-00000010.zst.age";
    env.s3.as_ref().unwrap().put(
        crate::support::BUCKET,
        orphan,
        b"orphan".to_vec(),
        None,
        &[],
    );
    let kept_before: Vec<String> = pieces(&env)
        .into_iter()
        .filter(|k| k.contains("/000000010000000000000003/"))
        .collect();
    assert!(!kept_before.is_empty(), "{:?}", pieces(&env));
    let second = env.start(&["wal-stream"]);
    wait_until(
        Duration::from_secs(30),
        "the stream from the new primary",
        || {
            sql_at(
            &socket,
            server.port,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat' AND state = 'streaming'",
        ) == "1"
        },
    );
    sql_at(
        &socket,
        server.port,
        "INSERT INTO public.stamps SELECT generate_series(101, 150)",
    );
    let target = sql_at(&socket, server.port, "SELECT pg_current_wal_insert_lsn()");
    wait_until(Duration::from_secs(60), "the new timeline streamed", || {
        sql_at(
            &socket,
            server.port,
            &format!("SELECT coalesce(bool_or(flush_lsn >= '{target}'), false) FROM pg_stat_replication WHERE application_name = 'lifeboat'"),
        ) == "t"
    });
    let left = pieces(&env);
    assert!(!left.iter().any(|k| k.ends_with(orphan)), "{left:?}");
    assert!(kept_before.iter().all(|k| left.contains(k)), "{left:?}");
    let (out, history) = env.fetch_wal("00000002.history");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        String::from_utf8_lossy(&history.unwrap()).starts_with("1\t"),
        "not timeline 2's history"
    );
    drop(server);
    let _ = kill(second);

    // And a recovery from the repository now ends on timeline 2 with its rows.
    let (out, third) = recover_and_start(&env, "third", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(&socket, third.port, "SELECT count(*) FROM public.stamps"),
        "150",
        "{}",
        out.stderr
    );
}

#[test]
fn the_daemon_streams_and_stops_cleanly_on_sigterm() {
    let env = streaming_env("stream_flush_ms = 60000\n[daemon]\nwal_stream = [\"main\"]\n");
    let daemon = env.start(&["daemon"]);
    wait_until(Duration::from_secs(30), "the daemon's stream", || {
        sql(
            &env,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat' AND state = 'streaming'",
        ) == "1"
    });
    insert(&env, 1, 10);
    let written = sql(&env, "SELECT pg_current_wal_insert_lsn()");
    // A piece a minute: what is received is stored only on the way out.
    std::thread::sleep(Duration::from_secs(2));
    let out = crate::support::terminate(daemon);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let segment = sql(&env, &format!("SELECT pg_walfile_name('{written}')"));
    let (fetched, bytes) = env.fetch_wal(&segment);
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    let offset: u64 = sql(
        &env,
        &format!("SELECT file_offset FROM pg_walfile_name_offset('{written}')"),
    )
    .parse()
    .unwrap();
    let bytes = bytes.unwrap();
    assert!(
        bytes[..offset as usize]
            .iter()
            .rev()
            .take(64)
            .any(|b| *b != 0),
        "the WAL received before SIGTERM was not stored"
    );
}

/// `program` of the test's PostgreSQL, as the user the servers run as (when the tests run as
/// root).
fn as_server_user(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(tools().path(program));
    if let Some((uid, gid)) = lifeboat_core::postgres::cluster::unprivileged_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

#[test]
fn the_stream_from_a_standby_follows_its_promotion() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = streaming_env("stream_flush_ms = 200\n");
    // A standby of the primary, made and run as the servers are.
    let parent = env.dir.path().join("standby");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = parent.join("data");
    let made = as_server_user("pg_basebackup")
        .args([
            "-D",
            data.to_str().unwrap(),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .env("PGHOST", env.cluster.socket_dir())
        .env("PGPORT", env.cluster.port().to_string())
        .env("PGUSER", "lifeboat")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let port = lifeboat_core::postgres::cluster::free_port().unwrap();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    writeln!(
        conf,
        "port = {port}\nunix_socket_directories = '{}'\narchive_mode = off",
        parent.display()
    )
    .unwrap();
    drop(conf);
    let log = parent.join("log");
    let started = as_server_user("pg_ctl")
        .args([
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = as_server_user("pg_ctl")
                .args(["-D", self.0.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }
    let _standby = Stop(data.clone());
    let standby = |q: &str| sql_at(&parent, port, q);

    // lifeboat streams from the standby.
    let config = std::fs::read_to_string(&env.config).unwrap();
    let primary = format!(
        "host={}&port={}",
        env.cluster.socket_dir().display(),
        env.cluster.port()
    );
    env.write_config(&config.replace(&primary, &format!("host={}&port={port}", parent.display())));
    let streamer = env.start(&["wal-stream"]);
    wait_until(
        Duration::from_secs(30),
        "the stream from the standby",
        || {
            standby("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'lifeboat' AND state = 'streaming'") == "1"
        },
    );
    insert(&env, 1, 50);
    let target = sql(&env, "SELECT pg_current_wal_insert_lsn()");
    wait_until(
        Duration::from_secs(60),
        "the primary's WAL streamed through the standby",
        || {
            standby(&format!(
            "SELECT coalesce(bool_or(flush_lsn >= '{target}'), false) FROM pg_stat_replication WHERE application_name = 'lifeboat'"
        )) == "t"
        },
    );

    // The primary is lost; the standby is promoted: the stream follows it onto timeline 2.
    env.cluster.crash().unwrap();
    let promoted = as_server_user("pg_ctl")
        .args(["-D", data.to_str().unwrap(), "-w", "promote"])
        .output()
        .unwrap();
    assert!(promoted.status.success(), "{promoted:?}");
    standby("INSERT INTO public.stamps SELECT generate_series(51, 80)");
    let target = standby("SELECT pg_current_wal_insert_lsn()");
    wait_until(Duration::from_secs(60), "the new timeline streamed", || {
        standby(&format!(
            "SELECT coalesce(bool_or(flush_lsn >= '{target}'), false) FROM pg_stat_replication WHERE application_name = 'lifeboat'"
        )) == "t"
    });
    let (out, history) = env.fetch_wal("00000002.history");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(String::from_utf8_lossy(&history.unwrap()).starts_with("1\t"));
    let log = kill(streamer);
    assert!(log.contains("the timeline ended"), "{log}");
    drop(_standby);

    // Every commit, before and after the promotion, is recovered from the repository.
    let socket = socket_for_recovery(&env);
    let (out, recovered) = recover_and_start(&env, "recovered", &socket, &["--latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        sql_at(
            &socket,
            recovered.port,
            "SELECT count(*) FROM public.stamps"
        ),
        "80",
        "{}",
        out.stderr
    );
}

#[test]
fn the_stream_authenticates_with_scram_over_tls() {
    let password = "stream-over-tls-pw";
    let mut options = crate::pitr::archiving_cluster();
    options.tcp_password = Some(password.into());
    options.tls = true;
    options.settings.push("archive_command = 'true'".into());
    let mut env = Env::with_cluster(crate::support::Repo::S3, false, options);
    // Replication connections need their own line in pg_hba.conf: TLS and SCRAM only.
    let hba = env.cluster.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("{text}hostssl replication lifeboat 127.0.0.1/32 scram-sha-256\n"),
    )
    .unwrap();
    sql(&env, "SELECT pg_reload_conf()");
    let config = std::fs::read_to_string(&env.config).unwrap();
    assert!(config.contains("127.0.0.1"), "{config}");
    env.write_config(&config.replace("/yomira\"", "/yomira?sslmode=require\""));
    sql(&env, "CREATE TABLE public.stamps (id int PRIMARY KEY)");
    let streamer = stream(&env);
    assert_eq!(
        sql(
            &env,
            "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid) WHERE application_name = 'lifeboat'"
        ),
        "t",
        "the stream is not encrypted"
    );
    insert(&env, 1, 20);
    wait_streamed(&env, "lifeboat", "the WAL streamed over TLS");
    let stderr = kill(streamer);
    assert!(!stderr.contains(password), "the password in the log");
    // A wrong password: one line naming what to fix, and no retrying.
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.extra_env.retain(|(k, _)| k != "LB_TEST_PG_PASSWORD");
    env.extra_env
        .push(("LB_TEST_PG_PASSWORD".into(), "wrong-password".into()));
    env.write_config(&config);
    let out = env.lifeboat(&["wal-stream"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("password authentication failed"),
        "{}",
        out.stderr
    );
}
