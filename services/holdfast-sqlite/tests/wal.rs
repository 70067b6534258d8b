//! The WAL does not grow without end while reads never stop: the checkpointer makes it start
//! over once it passes `wal_restart_frames`, however busy the readers are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::Connection;

/// Commits, one per batch: at least one WAL frame each.
const WRITES: i64 = 3_000;
/// The restart threshold of this test (the default is 16,384).
const RESTART_FRAMES: i64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_while_readers_never_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wal.db");
    let options = Options {
        checkpoint_every: Duration::from_millis(5),
        wal_restart_frames: RESTART_FRAMES,
        ..Options::default()
    };
    let db = Db::open(Some(&path), options, |conn: &mut Connection| {
        conn.execute_batch("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);")
            .map_err(Failure::from)
    })
    .expect("open db");

    // Readers that never all stop at once: each starts its next read as soon as one ends.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        readers.push(tokio::spawn(async move {
            let mut reads = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = db
                    .read(|conn: &Connection| {
                        conn.query_row("SELECT count(*) FROM kv", [], |row| row.get(0))
                            .map_err(Failure::from)
                    })
                    .await
                    .expect("read");
                reads += 1;
            }
            reads
        }));
    }
    for k in 0..WRITES {
        db.write(move |conn: &Connection| {
            conn.execute("INSERT INTO kv (k, v) VALUES (?1, ?1)", [k])
                .map(drop)
                .map_err(Failure::from)
        })
        .await
        .expect("write");
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads > 0, "the readers ran");

    // The WAL file is as long as the most frames it ever held (it is reused, not shrunk,
    // below `journal_size_limit`): without restarts it would hold every commit's frames
    // (≈3,000). With them it stays far below, though how far depends on how often the
    // checkpointer gets a core: 1,101 frames once on a busy CI run, so the bound is half.
    let page: u64 = 4096 + 24;
    let wal = std::fs::metadata(dir.path().join("wal.db-wal")).map_or(0, |m| m.len());
    let frames = wal / page;
    assert!(
        frames < u64::try_from(WRITES / 2).expect("positive"),
        "the WAL grew to {frames} frames over {WRITES} commits ({reads} reads meanwhile); it should start over past {RESTART_FRAMES}"
    );
    let rows: i64 = db
        .read(|conn: &Connection| {
            conn.query_row("SELECT count(*) FROM kv", [], |row| row.get(0))
                .map_err(Failure::from)
        })
        .await
        .expect("count");
    assert_eq!(rows, WRITES, "every answered write is there");
}
