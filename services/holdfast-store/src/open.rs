//! Which store a process uses, and opening and migrating it: the `--store` flag
//! (`HOLDFAST_STORE`), [`open`] and [`migrate`].

use holdfast_platform::redact::redact_url;
use std::path::PathBuf;

use crate::{ScyllaStore, SqliteStore, Store, StoreError};

/// The keyspace holdfast's ScyllaDB tables live in (`schema/scylla.cql`).
pub const KEYSPACE: &str = "holdfast";

/// The store's section of the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// Durable store: `sqlite://PATH` or `scylla://host:port,...`.
    #[arg(long, env = "HOLDFAST_STORE", value_name = "URL", value_parser = StoreUrl::parse)]
    pub store: Option<StoreUrl>,
}

/// Where durable state lives. Debug and parse errors hide credentials
/// ([`holdfast_platform::redact::redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// ScyllaDB contact points.
    Scylla(Vec<String>),
}

impl StoreUrl {
    /// Parses `sqlite://PATH` or `scylla://host:port,...`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://./data/holdfast.db".into());
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if let Some(rest) = raw.strip_prefix("scylla://") {
            let nodes: Vec<String> = rest.split(',').map(str::trim).map(String::from).collect();
            if nodes.iter().any(|n| !is_host_port(n)) {
                return Err(format!(
                    "expected scylla://host:port,..., got {:?}",
                    redact_url(raw)
                ));
            }
            Ok(Self::Scylla(nodes))
        } else {
            Err(format!(
                "expected sqlite://PATH or scylla://host:port,..., got {:?}",
                redact_url(raw)
            ))
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Scylla(nodes) => f
                .debug_tuple("Scylla")
                .field(&redact_url(&nodes.join(",")))
                .finish(),
        }
    }
}

fn is_host_port(raw: &str) -> bool {
    // No `user:password@`: the driver takes no credentials from here, and would print them.
    raw.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('@') && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

/// Opens the store at `url`: SQLite creates its directory and file and migrates itself;
/// ScyllaDB connects to an existing schema (see [`migrate`]).
pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            SqliteStore::open(path).await?.into()
        }
        StoreUrl::Scylla(nodes) => ScyllaStore::connect(nodes, KEYSPACE).await?.into(),
    })
}

/// Opens the store at `url` and brings its schema up to date (ScyllaDB: `schema/scylla.cql`;
/// SQLite migrates on open). Safe to run again.
pub async fn migrate(url: &StoreUrl) -> Result<Store, StoreError> {
    let store = open(url).await?;
    if let Store::Scylla(scylla) = &store {
        scylla.migrate().await?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_parses_both_backends() {
        assert_eq!(
            StoreUrl::parse("sqlite://data/x.db"),
            Ok(StoreUrl::Sqlite("data/x.db".into()))
        );
        assert!(
            matches!(StoreUrl::parse("scylla://n1:9042,n2:9042"), Ok(StoreUrl::Scylla(n)) if n.len() == 2)
        );
        assert!(StoreUrl::parse("postgres://x").is_err());
        assert!(StoreUrl::parse("sqlite://").is_err());
        assert!(StoreUrl::parse("scylla://n1").is_err());
    }

    #[test]
    fn store_urls_print_without_credentials() {
        let error = StoreUrl::parse("scylla://cass:hunter2@db1:9042").expect_err("no credentials");
        assert!(!error.contains("hunter2"), "{error}");
        let store = StoreUrl::Scylla(vec!["cass:hunter2@db1:9042".into()]);
        assert!(!format!("{store:?}").contains("hunter2"), "{store:?}");
        let error = StoreUrl::parse("scylla://cass:hunter2@db1").expect_err("no port");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn open_creates_the_sqlite_directory_and_migrate_runs_again() {
        let dir = tempfile::tempdir().expect("dir");
        let url = StoreUrl::Sqlite(dir.path().join("nested/holdfast.db"));
        migrate(&url).await.expect("first");
        migrate(&url).await.expect("again");
        assert!(dir.path().join("nested/holdfast.db").exists());
    }
}
