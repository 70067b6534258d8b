//! The conformance suite against the ScyllaDB backend over CQL: on the contact points in
//! `SCYLLA_NODES` (`host:port,...`, e.g. a ScyllaDB cluster) when set, else on an Apache
//! Cassandra 5 node the testkit starts (same CQL and native protocol, LWTs, `USING TTL`,
//! `USING TIMESTAMP`; ScyllaDB itself has no package here). Keyspace: `SCYLLA_KEYSPACE`,
//! default `holdfast_conformance`; the schema is applied first, and every check writes
//! under fresh keys, so reruns on one keyspace are fine. `CONFORMANCE_FILTER` (a substring
//! of check names) runs a subset.

use holdfast_store::conformance;
use holdfast_store::{ScyllaStore, Store};
use holdfast_testkit::CqlNodes;

#[test]
fn scylla_conformance() {
    // On the test's own thread: the node is tied to the thread that started it.
    let nodes = CqlNodes::from_env_or_start().expect("a CQL node (make deps installs Apache Cassandra)");
    // The checks run on workers with a larger stack than the 2 MiB default: a debug build of
    // the driver's futures nests deep enough to overflow it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let keyspace = std::env::var("SCYLLA_KEYSPACE").unwrap_or_else(|_| "holdfast_conformance".into());
        let store = ScyllaStore::connect(&nodes.contact_points(), &keyspace)
            .await
            .expect("connect to the CQL node");
        store.migrate().await.expect("apply schema");
        store.migrate().await.expect("schema applies twice");
        // `CONFORMANCE_FILTER=substring` runs only the checks whose name contains it.
        let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
        let store = Store::from(store);
        for (name, check) in conformance::checks::<Store>() {
            if name.contains(filter.as_str()) {
                println!("conformance: {name}");
                if let Err(failed) = tokio::spawn(check(store.clone())).await {
                    std::panic::resume_unwind(failed.into_panic());
                }
            }
        }
    });
}
