//! Reads on a real SQLite file: [`Db::lookup`] runs on the caller's thread, [`Db::read`] on
//! tokio's blocking pool; both see every write answered before they start, in one snapshot,
//! and wait for a connection when every reader is busy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

fn open(path: Option<&Path>, readers: usize) -> Db {
    let options = Options {
        readers,
        ..Options::default()
    };
    Db::open(path, options, |conn: &mut Connection| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);",
        )?;
        Ok::<(), Failure>(())
    })
    .expect("open db")
}

async fn put(db: &Db, key: String, v: i64) {
    db.write(move |conn| {
        conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)", (key, v))?;
        Ok::<(), Failure>(())
    })
    .await
    .expect("write");
}

fn value(conn: &Connection, key: &str) -> Result<Option<i64>, Failure> {
    Ok(conn
        .query_row("SELECT v FROM kv WHERE k = ?1", [key], |row| row.get(0))
        .optional()?)
}

#[tokio::test(flavor = "current_thread")]
async fn a_lookup_runs_on_the_callers_thread_and_a_read_on_the_blocking_pool() {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(Some(&dir.path().join("r.db")), 2);
    put(&db, "k".into(), 7).await;
    let caller = std::thread::current().id();
    let (here, v) = db
        .lookup(|conn| Ok::<(ThreadId, _), Failure>((std::thread::current().id(), value(conn, "k")?)))
        .await
        .expect("lookup");
    assert_eq!(
        (here, v),
        (caller, Some(7)),
        "the lookup ran on the caller's thread"
    );
    let (there, v) = db
        .read(|conn| Ok::<(ThreadId, _), Failure>((std::thread::current().id(), value(conn, "k")?)))
        .await
        .expect("read");
    assert_eq!(v, Some(7));
    assert_ne!(there, caller, "the read ran on the blocking pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_waits_for_a_reader_while_every_reader_is_busy() {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(Some(&dir.path().join("r.db")), 1);
    put(&db, "k".into(), 1).await;
    // The only reader, held inside a read until `release` fires.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = oneshot::channel::<()>();
    let held = tokio::spawn(db.read(move |conn| {
        let before = value(conn, "k")?;
        let _ = started.send(());
        let _ = released.recv();
        Ok::<_, Failure>((before, value(conn, "k")?))
    }));
    running.await.expect("the read started");
    let finished = Arc::new(AtomicBool::new(false));
    let lookup = tokio::spawn({
        let (db, finished) = (db.clone(), Arc::clone(&finished));
        async move {
            let v = db.lookup(|conn| value(conn, "k")).await;
            finished.store(true, Ordering::SeqCst);
            v
        }
    });
    // The lookup is queued behind the busy reader (it neither fails nor takes a connection
    // that is in use): a write goes through meanwhile, and the lookup has not answered.
    put(&db, "k".into(), 2).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the lookup answered without a reader"
    );
    release.send(()).expect("release the reader");
    assert_eq!(
        held.await.expect("read task").expect("read"),
        (Some(1), Some(1)),
        "the held read kept its snapshot"
    );
    assert_eq!(
        lookup.await.expect("lookup task").expect("lookup"),
        Some(2),
        "the lookup sees the later write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_see_every_answered_write_in_one_snapshot_while_writers_run() {
    const ACCOUNTS: i64 = 8;
    const WRITERS: usize = 4;
    const TRANSFERS: usize = 100;
    let dir = tempfile::tempdir().expect("dir");
    let db = open(Some(&dir.path().join("r.db")), 2);
    db.write(|conn| {
        for id in 0..ACCOUNTS {
            conn.execute("INSERT INTO account (id, balance) VALUES (?1, 100)", [id])?;
        }
        Ok::<(), Failure>(())
    })
    .await
    .expect("accounts");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..TRANSFERS {
                let (from, to) = ((w + i) as i64 % ACCOUNTS, (w + 3 * i + 1) as i64 % ACCOUNTS);
                let key = format!("{w}-{i}");
                db.write(move |conn| {
                    conn.execute("UPDATE account SET balance = balance - 1 WHERE id = ?1", [from])?;
                    conn.execute("UPDATE account SET balance = balance + 1 WHERE id = ?1", [to])?;
                    conn.execute("INSERT INTO kv (k, v) VALUES (?1, ?2)", (key, i as i64))?;
                    Ok::<(), Failure>(())
                })
                .await
                .expect("transfer");
                // Answered means committed: a lookup that starts now sees the write, and the
                // balances (two statements, one snapshot) add up.
                let key = format!("{w}-{i}");
                let (seen, sum) = db
                    .lookup(move |conn| {
                        let seen = value(conn, &key)?;
                        let sum: i64 =
                            conn.query_row("SELECT sum(balance) FROM account", [], |row| row.get(0))?;
                        Ok::<_, Failure>((seen, sum))
                    })
                    .await
                    .expect("lookup");
                assert_eq!(seen, Some(i as i64));
                assert_eq!(sum, ACCOUNTS * 100);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    let count: i64 = db
        .lookup(|conn| Ok::<_, Failure>(conn.query_row("SELECT count(*) FROM kv", [], |row| row.get(0))?))
        .await
        .expect("count");
    assert_eq!(count, (WRITERS * TRANSFERS) as i64);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lookup_in_memory_goes_to_the_writer_and_sees_its_writes() {
    let db = open(None, 2);
    put(&db, "k".into(), 3).await;
    let v = db.lookup(|conn| value(conn, "k")).await.expect("lookup");
    assert_eq!(v, Some(3));
}
