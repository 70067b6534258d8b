//! One SQLite database as holdfast's services use it (the store's embedded backend and the
//! PSP simulator's books): [`Db`].
//!
//! - **One writer thread with group commit** ([`writer`]): every write is a job queued to
//!   the thread that owns the write connection. The thread takes what is queued (up to
//!   [`Options::max_batch`]), runs `BEGIN IMMEDIATE`, wraps each job in a `SAVEPOINT` (a job
//!   that fails rolls back only its savepoint and gets its own error), `COMMIT`s once, and
//!   answers every job only after that `COMMIT` succeeded; a failed `COMMIT` fails every job
//!   of the batch. At low load a batch is one job; under load the commit cost (and each hot
//!   page's WAL frame) is shared by the batch. No lock convoy: callers wait on a channel.
//! - **Reader connections** ([`readers`]): read-only calls run on their own connections (WAL
//!   lets them read while the writer writes), each call in one read transaction, so it sees
//!   one snapshot: on tokio's blocking pool ([`Db::read`]), or on the caller's thread for a
//!   read of a few rows by key ([`Db::lookup`]: no hand-off between threads). A write
//!   answered before a read starts is visible to it (answered means committed). An
//!   in-memory database has no readers: reads queue to the writer.
//! - **Checkpoints off the commit path** ([`checkpoint`]): the writer has
//!   `wal_autocheckpoint` off; a background thread runs `wal_checkpoint(PASSIVE)` (the
//!   fsyncs) on its own connection while the WAL has new frames, and a `RESTART` checkpoint
//!   once the WAL passes [`Options::wal_restart_frames`] (readers that never all stop at
//!   once would otherwise keep the WAL from ever starting over).
//!
//! The writer and every reader get [`connection::tune`]: statements stay compiled in their
//! cache (the checkpointer runs only its two pragmas). A binary that runs a `Db` should call
//! [`heap::keep_freed_memory`] once at start: the writer's per-job statement journal
//! otherwise makes glibc hand pages back to the kernel and fault them in again every job.
//!
//! Durability is WAL + `synchronous = NORMAL`: a committed (so answered) write survives a
//! crash of the process; an OS crash or power loss may roll back the last commits (the file
//! stays consistent). `FULL` measured ~3 ms of fsync per commit on this machine's disk.

pub mod checkpoint;
pub mod connection;
pub mod heap;
pub mod readers;
mod statement;
pub mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use crate::checkpoint::Checkpointer;
use crate::readers::Readers;
use crate::statement::exec;
use crate::writer::Writer;

/// How a [`Db`] runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most jobs one commit takes.
    pub max_batch: usize,
    /// Read-only connections (a file only; 0 sends reads to the writer).
    pub readers: usize,
    /// How often the checkpointer looks for new WAL frames.
    pub checkpoint_every: Duration,
    /// How long a statement waits for another connection's (or process's) lock.
    pub busy_timeout: Duration,
    /// WAL frames past which the checkpointer also makes the WAL start over (a `RESTART`
    /// checkpoint): under a steady stream of reads some reader always holds a snapshot in
    /// the WAL, so the writer never gets to restart it and it grows without end.
    pub wal_restart_frames: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_batch: 64,
            readers: 2,
            checkpoint_every: Duration::from_millis(100),
            busy_timeout: Duration::from_secs(5),
            // 16,384 frames of 4 KiB pages: 64 MiB, `journal_size_limit` below.
            wal_restart_frames: 16_384,
        }
    }
}

/// Why the database could not do a job's (or a batch's) work: the engine's error code (if
/// any) and its message. Cloneable, since a failed `COMMIT` fails every job of its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sqlite: {message}")]
pub struct Failure {
    /// SQLite's primary error code, `None` for a failure outside the engine (the writer
    /// thread is gone, a job panicked).
    pub code: Option<ErrorCode>,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure outside the engine.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: None,
            message: message.into(),
        }
    }

    /// Whether the file is damaged (or not a database at all).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self.code,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        )
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self {
            code: error.sqlite_error_code(),
            message: error.to_string(),
        }
    }
}

struct Shared {
    writer: Writer,
    readers: Option<Readers>,
    path: Option<PathBuf>,
    /// Held for its drop: stops the checkpointer thread.
    _checkpointer: Option<Checkpointer>,
}

/// One database: a writer thread, reader connections and a checkpointer. Cheap to clone;
/// the threads stop (after the queued jobs) when the last clone is dropped.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if needed) the file at `path`, or a private in-memory database for
    /// `None`. Blocking: call it from a blocking context. The write connection gets WAL (on
    /// a file), `synchronous = NORMAL`, no autocheckpoint; then `prepare` runs on it once
    /// (the caller's pragmas and migrations) before any reader opens.
    pub fn open<E, P>(path: Option<&Path>, options: Options, prepare: P) -> Result<Self, E>
    where
        E: From<Failure>,
        P: FnOnce(&mut Connection) -> Result<(), E>,
    {
        let mut conn = match path {
            Some(path) => Connection::open(path).map_err(Failure::from)?,
            None => Connection::open_in_memory().map_err(Failure::from)?,
        };
        configure_writer(&conn, path.is_some(), &options)?;
        prepare(&mut conn)?;
        let (readers, checkpointer) = match path {
            Some(path) => (
                (options.readers > 0)
                    .then(|| Readers::open(path, options.readers, options.busy_timeout))
                    .transpose()?,
                Some(Checkpointer::start(path, &options)?),
            ),
            None => (None, None),
        };
        let writer = Writer::start(
            conn,
            options.max_batch,
            checkpointer.as_ref().map(Checkpointer::dirty_flag),
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                writer,
                readers,
                path: path.map(Path::to_path_buf),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// Queues `work` to the writer now (so jobs queue in call order), and answers its result
    /// once the batch it ran in committed. `work` runs inside a savepoint of the batch's
    /// transaction: it must not begin, commit or roll back a transaction itself. An `Err`
    /// from `work` rolls back what `work` wrote, and only that.
    pub fn write<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.shared.writer.submit(work)
    }

    /// Runs `work` in one read transaction on a reader connection (on the writer, for an
    /// in-memory database). `work` must not write.
    pub fn read<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.on_reader(work, Thread::BlockingPool)
    }

    /// Runs `work` like [`Db::read`], on the calling thread instead of tokio's blocking
    /// pool: for a read of a few rows by key (tens of microseconds of SQLite), where the
    /// blocking pool's hand-off (a wake-up of a pool thread, then of the caller) costs more
    /// CPU than the read. A read that may scan or return many rows belongs in [`Db::read`],
    /// which keeps the runtime's workers free meanwhile.
    pub fn lookup<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.on_reader(work, Thread::Caller)
    }

    fn on_reader<T, E, F>(
        &self,
        work: F,
        thread: Thread,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        async move {
            match (&shared.readers, thread) {
                (Some(readers), Thread::BlockingPool) => readers.run(work).await,
                (Some(readers), Thread::Caller) => readers.run_here(work).await,
                (None, _) => shared.writer.submit(work).await,
            }
        }
    }
}

/// Where a read on a reader connection runs.
#[derive(Debug, Clone, Copy)]
enum Thread {
    /// Tokio's blocking pool ([`Db::read`]).
    BlockingPool,
    /// The calling thread ([`Db::lookup`]).
    Caller,
}

fn configure_writer(conn: &Connection, on_disk: bool, options: &Options) -> Result<(), Failure> {
    connection::tune(conn)?;
    conn.busy_timeout(options.busy_timeout)?;
    if on_disk {
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::other(format!(
                "sqlite refused WAL mode (journal_mode is {mode})"
            )));
        }
        // The checkpointer thread checkpoints; a commit never does.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A WAL that grew under a burst is cut back to this after a checkpoint reset it.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// What a [`nested`] block decided about its writes.
#[derive(Debug)]
pub enum Nested<T> {
    /// Keep what it wrote (part of the job's savepoint, committed with the batch).
    Keep(T),
    /// Undo what it wrote, and answer `T` all the same (a refusal that is not an error).
    Undo(T),
}

/// Runs `work` inside a savepoint nested in the job's own: `Nested::Undo` (or an `Err`)
/// rolls back what `work` wrote, leaving the rest of the job (and its batch) as it was.
/// For a job that must answer `Ok` after discarding writes, since an `Err` from the job
/// itself is what rolls back the job.
pub fn nested<T, E, F>(conn: &Connection, work: F) -> Result<T, E>
where
    E: From<Failure>,
    F: FnOnce(&Connection) -> Result<Nested<T>, E>,
{
    exec(conn, "SAVEPOINT nested")?;
    let (result, keep) = match work(conn) {
        Ok(Nested::Keep(value)) => (Ok(value), true),
        Ok(Nested::Undo(value)) => (Ok(value), false),
        Err(error) => (Err(error), false),
    };
    if !keep {
        exec(conn, "ROLLBACK TO nested")?;
    }
    exec(conn, "RELEASE nested")?;
    result
}
