//! The writer's promises on a real SQLite file: a failing job fails alone in its batch,
//! nobody is answered before COMMIT (a COMMIT that fails fails every job of the batch),
//! readers see only committed, consistent data while writers run, and a write that was
//! answered survives a kill of the process right after.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::oneshot;

#[derive(Debug, PartialEq)]
enum TestError {
    Db(Failure),
    Refused(&'static str),
}

impl From<Failure> for TestError {
    fn from(failure: Failure) -> Self {
        Self::Db(failure)
    }
}

fn sql(error: rusqlite::Error) -> TestError {
    TestError::Db(error.into())
}

fn open(path: &Path) -> Db {
    Db::open(Some(path), Options::default(), |conn: &mut Connection| {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS child (
                 id TEXT PRIMARY KEY,
                 parent_id TEXT NOT NULL REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
             );
             CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS transfer (id TEXT PRIMARY KEY);",
        )?;
        Ok::<(), Failure>(())
    })
    .expect("open db")
}

/// A row as another connection sees it: committed data only.
fn committed(path: &Path, key: &str) -> Option<i64> {
    let conn = Connection::open(path).expect("side connection");
    conn.query_row("SELECT v FROM kv WHERE k = ?1", [key], |row| row.get(0))
        .optional()
        .expect("side read")
}

fn put(db: &Db, key: &'static str) -> impl Future<Output = Result<(), TestError>> + use<> {
    db.write(move |conn| {
        conn.execute("INSERT INTO kv (k, v) VALUES (?1, 1)", [key])
            .map_err(sql)?;
        Ok(())
    })
}

/// Holds the writer inside a job until the returned sender fires, so the jobs queued
/// meanwhile form the next batch together. Answers once the writer is inside that job.
async fn hold_writer(
    db: &Db,
) -> (
    mpsc::Sender<()>,
    impl Future<Output = Result<(), TestError>> + use<>,
) {
    let (release, released) = mpsc::channel::<()>();
    let (started, running) = oneshot::channel::<()>();
    let held = db.write(move |_conn| {
        let _ = started.send(());
        let _ = released.recv();
        Ok::<(), TestError>(())
    });
    running.await.expect("writer runs the holding job");
    (release, held)
}

#[tokio::test]
async fn writer_failing_job_rolls_back_alone_and_the_rest_of_its_batch_commits() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("w.db");
    let db = open(&path);
    let (release, held) = hold_writer(&db).await;

    let first = put(&db, "a");
    let side_path = path.clone();
    let failing = db.write(move |conn| {
        conn.execute("INSERT INTO kv (k, v) VALUES ('b', 1)", [])
            .map_err(sql)?;
        // In the same transaction as `a`, and `a` is not committed yet: another
        // connection does not see it.
        let seen_here: i64 = conn
            .query_row("SELECT count(*) FROM kv WHERE k = 'a'", [], |row| row.get(0))
            .map_err(sql)?;
        assert_eq!(seen_here, 1);
        assert_eq!(
            committed(&side_path, "a"),
            None,
            "a is not committed while its batch runs"
        );
        Err::<(), _>(TestError::Refused("b changed its mind"))
    });
    let last = put(&db, "c");
    // A job that fails on SQLite's side (a duplicate key) is rolled back alone too.
    let duplicate = put(&db, "c");
    release.send(()).expect("release");

    held.await.expect("holding job");
    first.await.expect("a committed");
    assert_eq!(failing.await, Err(TestError::Refused("b changed its mind")));
    last.await.expect("c committed");
    assert!(matches!(
        duplicate.await,
        Err(TestError::Db(Failure {
            code: Some(ErrorCode::ConstraintViolation),
            ..
        }))
    ));

    assert_eq!(committed(&path, "a"), Some(1));
    assert_eq!(
        committed(&path, "b"),
        None,
        "the failed job's write was rolled back"
    );
    assert_eq!(committed(&path, "c"), Some(1));
}

#[tokio::test]
async fn writer_panicking_job_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("w.db");
    let db = open(&path);
    let (release, held) = hold_writer(&db).await;

    let before = put(&db, "before");
    let panicking = db.write(|conn| {
        conn.execute("INSERT INTO kv (k, v) VALUES ('panicked', 1)", [])
            .map_err(sql)?;
        panic!("a job's bug");
        #[allow(unreachable_code)]
        Ok::<(), TestError>(())
    });
    let after = put(&db, "after");
    release.send(()).expect("release");
    held.await.expect("holding job");

    before.await.expect("before committed");
    assert!(
        matches!(panicking.await, Err(TestError::Db(Failure { code: None, .. }))),
        "the panicking job is answered with an error, not a panic"
    );
    after.await.expect("after committed");
    assert_eq!(committed(&path, "before"), Some(1));
    assert_eq!(
        committed(&path, "panicked"),
        None,
        "the panicked job's write was rolled back"
    );
    assert_eq!(committed(&path, "after"), Some(1));
    put(&db, "next").await.expect("the writer goes on");
    assert_eq!(committed(&path, "next"), Some(1));
}

#[tokio::test]
async fn writer_failed_commit_answers_no_job_of_its_batch_as_done() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("w.db");
    let db = open(&path);
    let (release, held) = hold_writer(&db).await;

    let before = put(&db, "before");
    // Each statement succeeds; the deferred foreign key is checked at COMMIT, which fails.
    let orphan = db.write(|conn| {
        conn.execute("INSERT INTO child (id, parent_id) VALUES ('c1', 'missing')", [])
            .map_err(sql)?;
        Ok::<(), TestError>(())
    });
    let after = put(&db, "after");
    release.send(()).expect("release");
    held.await.expect("holding job");

    for (name, answer) in [
        ("before", before.await),
        ("orphan", orphan.await),
        ("after", after.await),
    ] {
        assert!(
            matches!(
                answer,
                Err(TestError::Db(Failure {
                    code: Some(ErrorCode::ConstraintViolation),
                    ..
                }))
            ),
            "{name}: {answer:?}"
        );
    }
    assert_eq!(committed(&path, "before"), None);
    assert_eq!(committed(&path, "after"), None);
    // The writer goes on with the next batch.
    put(&db, "next").await.expect("next batch commits");
    assert_eq!(committed(&path, "next"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_concurrent_transfers_and_readers_see_consistent_committed_data() {
    const ACCOUNTS: i64 = 10;
    const WRITERS: usize = 8;
    const TRANSFERS: usize = 100;
    let dir = tempfile::tempdir().expect("dir");
    let db = open(&dir.path().join("w.db"));
    db.write(|conn| {
        for id in 0..ACCOUNTS {
            conn.execute("INSERT INTO account (id, balance) VALUES (?1, 1000)", [id])
                .map_err(sql)?;
        }
        Ok::<(), TestError>(())
    })
    .await
    .expect("accounts");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (db, done) = (db.clone(), std::sync::Arc::clone(&done));
        readers.push(tokio::spawn(async move {
            let mut reads = 0_u32;
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                // Two statements, one snapshot: the balances add up and match the log.
                let (sum, moved): (i64, i64) = db
                    .read(|conn| {
                        let sum = conn
                            .query_row("SELECT sum(balance) FROM account", [], |row| row.get(0))
                            .map_err(sql)?;
                        let moved = conn
                            .query_row("SELECT count(*) FROM transfer", [], |row| row.get(0))
                            .map_err(sql)?;
                        Ok::<_, TestError>((sum, moved))
                    })
                    .await
                    .expect("read");
                assert_eq!(sum, ACCOUNTS * 1000, "after {moved} transfers");
                reads += 1;
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..TRANSFERS {
                let id = format!("{w}-{i}");
                let (from, to) = ((w + i) as i64 % ACCOUNTS, (w + 2 * i + 1) as i64 % ACCOUNTS);
                let logged = id.clone();
                db.write(move |conn| {
                    conn.execute("UPDATE account SET balance = balance - 1 WHERE id = ?1", [from])
                        .map_err(sql)?;
                    conn.execute("UPDATE account SET balance = balance + 1 WHERE id = ?1", [to])
                        .map_err(sql)?;
                    conn.execute("INSERT INTO transfer (id) VALUES (?1)", [logged])
                        .map_err(sql)?;
                    Ok::<(), TestError>(())
                })
                .await
                .expect("transfer");
                // Answered means committed: a read that starts now sees it.
                let seen: i64 = db
                    .read(move |conn| {
                        conn.query_row("SELECT count(*) FROM transfer WHERE id = ?1", [id], |row| {
                            row.get(0)
                        })
                        .map_err(sql)
                    })
                    .await
                    .expect("read back");
                assert_eq!(seen, 1);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        assert!(reader.await.expect("reader task") > 0);
    }
    let moved: i64 = db
        .read(|conn| {
            conn.query_row("SELECT count(*) FROM transfer", [], |row| row.get(0))
                .map_err(sql)
        })
        .await
        .expect("count");
    assert_eq!(moved, (WRITERS * TRANSFERS) as i64);
}

const CHILD_ENV: &str = "HOLDFAST_SQLITE_KILL_CHILD_DB";

/// In the child (the env var set): writes rows from 16 tasks and prints each id once its
/// write was answered, until killed (bounded: 60 s or 100,000 rows). In the parent: runs
/// the child, kills it (SIGKILL) after 300 answers, and finds every answered row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_answered_writes_survive_a_kill_of_the_process() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child_writes_until_killed(Path::new(&path)).await;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("w.db");
    drop(open(&path));
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "writer_answered_writes_survive_a_kill_of_the_process",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let answered = tokio::task::spawn_blocking(move || {
        let mut answered = Vec::new();
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("answered ") {
                answered.push(id.to_string());
            }
            if answered.len() >= 300 && !killed {
                child.kill().expect("kill the child");
                killed = true;
            }
        }
        // Lines already in the pipe when the kill landed were answered too.
        let _ = child.wait();
        assert!(killed, "the child ended before 300 answers");
        answered
    })
    .await
    .expect("reader");

    let conn = Connection::open(&path).expect("reopen after the kill");
    let mut missing = Vec::new();
    for id in &answered {
        if committed_conn(&conn, id).is_none() {
            missing.push(id.clone());
        }
    }
    assert!(missing.is_empty(), "answered but lost: {missing:?}");
}

fn committed_conn(conn: &Connection, key: &str) -> Option<i64> {
    conn.query_row("SELECT v FROM kv WHERE k = ?1", [key], |row| row.get(0))
        .optional()
        .expect("read")
}

async fn child_writes_until_killed(path: &Path) {
    let db = open(path);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6250 {
                if Instant::now() > deadline {
                    return;
                }
                let id = format!("{task}-{i}");
                let key = id.clone();
                db.write(move |conn| {
                    conn.execute("INSERT INTO kv (k, v) VALUES (?1, ?2)", params![key, i])
                        .map_err(sql)?;
                    Ok::<(), TestError>(())
                })
                .await
                .expect("write");
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "answered {id}");
                let _ = out.flush();
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
