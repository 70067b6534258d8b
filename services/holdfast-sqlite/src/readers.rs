//! Read-only connections: a small pool, each call with one connection inside one read
//! transaction (one snapshot for all its statements), on tokio's blocking pool
//! ([`Readers::run`]) or on the calling thread ([`Readers::run_here`]).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Failure;
use crate::statement::exec;

struct Pool {
    idle: Mutex<Vec<Connection>>,
}

/// The reader connections of a file.
pub(crate) struct Readers {
    pool: Arc<Pool>,
    /// One permit per connection: a call holds one while it has a connection.
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `count` read-only connections on the file at `path` (its schema is in place).
    pub(crate) fn open(path: &Path, count: usize, busy_timeout: Duration) -> Result<Self, Failure> {
        let idle = (0..count)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(busy_timeout)?;
                crate::connection::tune(&conn)?;
                Ok(conn)
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Self {
            pool: Arc::new(Pool {
                idle: Mutex::new(idle),
            }),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Runs `work` on an idle connection in one read transaction.
    pub(crate) async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let permit = self.permit().await?;
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let result = on_idle_connection(&pool, work);
            drop(permit);
            result
        })
        .await
        .map_err(|e| E::from(Failure::other(format!("sqlite read task failed: {e}"))))?
    }

    /// Runs `work` like [`Readers::run`], but on the calling thread: for a read of a few rows
    /// by key, which costs less than the two thread wake-ups of the blocking pool's hand-off.
    /// Waits (asynchronously) only for an idle connection.
    pub(crate) async fn run_here<T, E, F>(&self, work: F) -> Result<T, E>
    where
        E: From<Failure>,
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        let permit = self.permit().await?;
        let result = on_idle_connection(&self.pool, work);
        drop(permit);
        result
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Failure> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Failure::other("the sqlite readers are closed"))
    }
}

/// Runs `work` in one read transaction on a connection out of `pool` (the caller holds a
/// permit, so one is idle).
fn on_idle_connection<T, E, F>(pool: &Pool, work: F) -> Result<T, E>
where
    E: From<Failure>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    let lease = Lease::take(pool)?;
    in_read_transaction(lease.conn(), work)
}

fn in_read_transaction<T, E, F>(conn: &Connection, work: F) -> Result<T, E>
where
    E: From<Failure>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    exec(conn, "BEGIN")?;
    let result = work(conn);
    // A read transaction has nothing to keep: ending it only lets go of the snapshot.
    exec(conn, "ROLLBACK")?;
    result
}

/// A connection out of the pool, put back on drop (a call that panicked too, its read
/// transaction ended first).
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl<'a> Lease<'a> {
    fn take(pool: &'a Pool) -> Result<Self, Failure> {
        let conn = pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| Failure::other("no idle sqlite reader despite a permit"))?;
        Ok(Self {
            pool,
            conn: Some(conn),
        })
    }

    #[allow(clippy::expect_used)] // `conn` is `Some` until drop.
    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("leased connection")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_autocommit() {
                let _ = exec(&conn, "ROLLBACK");
            }
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}
