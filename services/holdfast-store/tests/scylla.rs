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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scylla_conformance() {
    // On the test's own thread: the node is tied to the thread that started it.
    let nodes = CqlNodes::from_env_or_start().expect("a CQL node (make deps installs Apache Cassandra)");
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
            check(store.clone()).await;
        }
    }
}
