//! The Tokio runtime every holdfast binary runs on (`holdfast`, `holdfast-load`).
//!
//! One setting differs from Tokio's default: the **LIFO slot is off**. With it on, a task
//! woken by the task running on a worker runs next on that worker. An HTTP/2 connection's
//! task is woken by every response (or request) a stream's task hands it, so with the slot
//! it ran right after each one and wrote each in a `writev` of its own: a coalesced batch of
//! 16 Reserves answered in 16 writes. With the slot off, the woken tasks queue in order, the
//! batch's answers are handed over first, and the connection writes them together (measured
//! in docs/performance.md, "Reserve: the LIFO slot off"). Tokio's own documentation notes the
//! slot's other cost: a task in it cannot be stolen by an idle worker.
//!
//! `Builder::disable_lifo_slot` is in Tokio's unstable API: the workspace builds with
//! `--cfg tokio_unstable` (`.cargo/config.toml`). A build without it still compiles and runs
//! with the slot on, and the test below fails, so that nobody ships that by accident.

/// The runtime's configuration: multi-threaded, every driver, the LIFO slot off.
pub fn builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}

/// A runtime of [`builder`]'s configuration, one worker per core.
pub fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    builder().build()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    /// On one worker: tasks `b` and `c` wait; a third task wakes `b`, then `c`. Which of the
    /// two runs first?
    fn woken_order(mut builder: tokio::runtime::Builder) -> Vec<&'static str> {
        let runtime = builder.worker_threads(1).build().expect("runtime");
        let order = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on(async {
            let (wake_b, b_woken) = oneshot::channel::<()>();
            let (wake_c, c_woken) = oneshot::channel::<()>();
            let waiter = |name, woken: oneshot::Receiver<()>| {
                let order = order.clone();
                tokio::spawn(async move {
                    woken.await.expect("woken");
                    order.lock().expect("order").push(name);
                })
            };
            // Spawned from outside the worker: it polls them in this order, so `b` and `c`
            // wait before the third task runs.
            let b = waiter("b", b_woken);
            let c = waiter("c", c_woken);
            let waker = tokio::spawn(async move {
                wake_b.send(()).expect("b waits");
                wake_c.send(()).expect("c waits");
            });
            for task in [waker, b, c] {
                task.await.expect("task");
            }
        });
        order.lock().expect("order").clone()
    }

    #[test]
    fn woken_tasks_run_in_the_order_they_were_woken() {
        // Tokio's default: the last task woken runs first (the LIFO slot), which made an
        // HTTP/2 connection write each answer of a batch on its own.
        assert_eq!(
            woken_order(tokio::runtime::Builder::new_multi_thread()),
            ["c", "b"],
            "the default runtime's LIFO slot (if Tokio changed it, the setting may be moot)"
        );
        // Ours: in order. Fails when built without `--cfg tokio_unstable` (a RUSTFLAGS in
        // the environment replaces .cargo/config.toml's list).
        assert_eq!(woken_order(super::builder()), ["b", "c"]);
    }
}
