//! The checkpointer: copies committed WAL frames into the database file on its own thread
//! and connection, so the two fsyncs of a checkpoint never stall a commit.
//!
//! The writer sets a flag after each commit; every `checkpoint_every` the thread runs
//! `wal_checkpoint(PASSIVE)` if the flag was set. PASSIVE takes no lock a writer or reader
//! waits on: it copies what no reader still needs, and the writer's next transaction
//! starts the WAL over once everything was copied (`journal_size_limit` then trims the
//! file). A checkpoint that could not copy everything (a reader held an old snapshot)
//! leaves the flag set, so the next tick tries again.
//!
//! Under a steady stream of reads the writer seldom finds every reader out of the WAL, so
//! it never starts it over and the file grows without end (measured: 230,000 frames, 900
//! MB, in 5 minutes of `holdfast-load bench checkout`). Once the WAL passes
//! `wal_restart_frames`, the thread runs a `RESTART` checkpoint instead: it waits (busy
//! handler) for the writer's batch and for the readers of older snapshots to finish, which
//! holds the next batch back for about that long, once per `wal_restart_frames` frames.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::{Failure, Options};

/// WAL frames past which a checkpoint that keeps falling behind is logged.
const WARN_FRAMES: i64 = 100_000;

/// The checkpointer thread of one file; it stops (with a last checkpoint) when dropped.
pub(crate) struct Checkpointer {
    dirty: Arc<AtomicBool>,
    /// Dropped to stop the thread.
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own on the file at `path`.
    pub(crate) fn start(path: &Path, options: &Options) -> Result<Self, Failure> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(options.busy_timeout)?;
        let dirty = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let (every, restart_frames) = (options.checkpoint_every, options.wal_restart_frames);
        let flag = Arc::clone(&dirty);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &flag, &stopped, every, restart_frames))
            .map_err(|e| Failure::other(format!("cannot start the sqlite checkpointer thread: {e}")))?;
        Ok(Self { dirty, _stop: stop })
    }

    /// The flag the writer sets after each commit.
    pub(crate) fn dirty_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.dirty)
    }
}

fn run(
    conn: &Connection,
    dirty: &AtomicBool,
    stopped: &mpsc::Receiver<()>,
    every: Duration,
    restart_frames: i64,
) {
    loop {
        let last = match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if dirty.swap(false, Ordering::AcqRel) {
            let outcome = checkpoint(conn, Mode::Passive).and_then(|(log, copied)| {
                if log >= restart_frames {
                    checkpoint(conn, Mode::Restart)
                } else {
                    Ok((log, copied))
                }
            });
            match outcome {
                Ok((log, copied)) => {
                    if copied < log {
                        dirty.store(true, Ordering::Release);
                    }
                    if log > WARN_FRAMES {
                        tracing::warn!(log, copied, "sqlite WAL keeps growing: checkpoints fall behind");
                    }
                }
                Err(failure) => {
                    dirty.store(true, Ordering::Release);
                    tracing::warn!(%failure, "sqlite checkpoint failed; retried on the next tick");
                }
            }
        }
        if last {
            return;
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// Copies what no reader needs; waits for nobody.
    Passive,
    /// Copies everything and waits for the readers of the WAL, so the next write starts it
    /// over.
    Restart,
}

/// One checkpoint: (frames in the WAL, frames copied to the database). After a `RESTART`
/// that did not have to give up, the WAL starts over: (0, 0).
fn checkpoint(conn: &Connection, mode: Mode) -> Result<(i64, i64), Failure> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
    };
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row(sql, [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(match mode {
        Mode::Restart if busy == 0 => (0, 0),
        _ => (log, copied),
    })
}
