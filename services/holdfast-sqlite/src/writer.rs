//! The writer thread: group commit over one connection.
//!
//! A job is a closure over the connection plus the way to answer its caller. The thread
//! blocks for the first job, takes whatever else is queued (up to the batch cap), and runs
//! the batch in one `BEGIN IMMEDIATE` ... `COMMIT`, each job inside `SAVEPOINT job` ...
//! `RELEASE job`. A job that fails (or panics) is rolled back to its savepoint: the others
//! keep their writes. Nobody is answered before the `COMMIT` returned: on success every
//! job gets its own result; on failure every job that had succeeded gets the commit's
//! error (its writes are gone), and the batch is rolled back.
//!
//! If SQLite ends the transaction by itself in the middle of a batch (it does for a few
//! errors: a full disk, out of memory), the jobs that had succeeded in it lost their
//! writes: they are failed with that reason, and the rest of the batch runs in a new
//! transaction.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::Failure;
use crate::statement::exec;

/// How a job that ran is answered, given its batch's commit failure if any.
type Answer = Box<dyn FnOnce(Option<&Failure>) + Send>;

/// What a job leaves for after the commit: whether its work succeeded (its savepoint was
/// released) and how to answer its caller, given the batch's commit failure if any.
struct Ran {
    ok: bool,
    answer: Answer,
}

/// A queued job: run it, or refuse it (it never ran) with a reason.
trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    fn refuse(self: Box<Self>, why: &Failure);
}

struct Typed<F, T, E> {
    work: F,
    answer_to: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Typed<F, T, E>
where
    T: Send + 'static,
    E: From<Failure> + Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Self { work, answer_to } = *self;
        let result = work(conn);
        Ran {
            ok: result.is_ok(),
            answer: Box::new(move |commit_failed: Option<&Failure>| {
                let answer = match (result, commit_failed) {
                    (Ok(_), Some(failure)) => Err(E::from(failure.clone())),
                    (result, _) => result,
                };
                // The caller may have gone away (its deadline): nobody to tell.
                let _ = answer_to.send(answer);
            }),
        }
    }

    fn refuse(self: Box<Self>, why: &Failure) {
        let _ = self.answer_to.send(Err(E::from(why.clone())));
    }
}

/// The handle that queues jobs to the writer thread. The thread stops (after the jobs
/// already queued) when this is dropped.
pub(crate) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the thread that owns `conn`. `dirty` (the checkpointer's) is set after every
    /// commit.
    pub(crate) fn start(
        conn: Connection,
        max_batch: usize,
        dirty: Option<Arc<AtomicBool>>,
    ) -> Result<Self, Failure> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&conn, &jobs, max_batch.max(1), dirty.as_deref()))
            .map_err(|e| Failure::other(format!("cannot start the sqlite writer thread: {e}")))?;
        Ok(Self { queue })
    }

    /// Queues `work` now; the future answers once its batch committed (or failed).
    pub(crate) fn submit<T, E, F>(&self, work: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<Failure> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (answer_to, answered) = oneshot::channel::<Result<T, E>>();
        let job: Box<dyn Job> = Box::new(Typed { work, answer_to });
        let queued = self.queue.send(job);
        async move {
            queued.map_err(|_| E::from(Failure::other("the sqlite writer thread stopped")))?;
            answered.await.map_err(|_| {
                E::from(Failure::other(
                    "a sqlite write job panicked or its writer stopped",
                ))
            })?
        }
    }
}

fn run(conn: &Connection, jobs: &mpsc::Receiver<Box<dyn Job>>, max_batch: usize, dirty: Option<&AtomicBool>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(conn, batch);
        if let Some(dirty) = dirty {
            dirty.store(true, Ordering::Release);
        }
    }
}

fn answer_all(ran: Vec<Ran>, failure: Option<&Failure>) {
    for job in ran {
        (job.answer)(failure);
    }
}

/// Fails the jobs that had succeeded in a transaction that is gone.
fn fail_lost(ran: Vec<Ran>, why: &Failure) {
    answer_all(ran, Some(why));
}

fn run_batch(conn: &Connection, batch: Vec<Box<dyn Job>>) {
    let mut ran: Vec<Ran> = Vec::with_capacity(batch.len());
    let mut open = false;
    for job in batch {
        if !open {
            if let Err(failure) = exec(conn, "BEGIN IMMEDIATE") {
                // The job never ran: it gets the reason (so do later ones, one by one).
                job.refuse(&failure);
                tracing::warn!(%failure, "sqlite writer could not begin a transaction");
                continue;
            }
            open = true;
        }
        if let Err(failure) = exec(conn, "SAVEPOINT job") {
            job.refuse(&failure);
            tracing::warn!(%failure, "sqlite writer could not open a savepoint");
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| job.run(conn)));
        let ok = matches!(&outcome, Ok(done) if done.ok);
        let closed = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        if conn.is_autocommit() || closed.is_err() {
            // The transaction ended under the batch (SQLite rolls back by itself on a full
            // disk or out of memory): what the earlier jobs wrote is gone.
            let why = Failure::other(format!(
                "the batch's transaction was rolled back by sqlite ({})",
                closed
                    .err()
                    .map_or_else(|| "after a job's error".into(), |e| e.message)
            ));
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            fail_lost(std::mem::take(&mut ran), &why);
            open = false;
            if let Ok(done) = outcome {
                (done.answer)(if done.ok { Some(&why) } else { None });
            }
            continue;
        }
        // A panicked job dropped its answer: its caller learns it from the closed channel.
        if let Ok(done) = outcome {
            ran.push(done);
        }
    }
    if !open {
        answer_all(ran, None);
        return;
    }
    match exec(conn, "COMMIT") {
        Ok(()) => answer_all(ran, None),
        Err(failure) => {
            tracing::warn!(%failure, jobs = ran.len(), "sqlite group commit failed; every job of the batch fails");
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            answer_all(ran, Some(&failure));
        }
    }
}
