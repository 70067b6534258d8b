//! A key's standing on SQLite: its waiting entry, its claim and the queue's depth in one
//! read transaction.
//!
//! A key that does not wait (every checkout the waiting room did not hold back) is three
//! probes by key, read on the caller's thread ([`SqliteStore::lookup`]). A waiting key's
//! position counts the entries ahead of it, up to the queue's bound: that read goes to the
//! blocking pool, again in one snapshot.

use super::SqliteStore;
use super::idempotency::select_live;
use super::waiting_room::{depth, entry, position};
use crate::idempotency::validate_key;
use crate::standing::{Standing, StandingStore};
use crate::waiting_room::validate;
use crate::{StoreError, now_ms};

impl StandingStore for SqliteStore {
    async fn standing(&self, queue: &str, scope: &str, key: &str) -> Result<Standing, StoreError> {
        validate(queue, key)?;
        validate_key(scope, key)?;
        let (queue, scope, key) = (queue.to_string(), scope.to_string(), key.to_string());
        let probe = {
            let (queue, scope, key) = (queue.clone(), scope.clone(), key.clone());
            self.lookup(move |conn| {
                if entry(conn, &queue, &key)?.is_some() {
                    return Ok(None);
                }
                Ok(Some(Standing {
                    waiting: None,
                    claim: select_live(conn, &scope, &key, now_ms())?,
                    depth: depth(conn, &queue)?,
                }))
            })
            .await?
        };
        if let Some(standing) = probe {
            return Ok(standing);
        }
        self.read(move |conn| {
            Ok(Standing {
                waiting: position(conn, &queue, &key)?,
                claim: select_live(conn, &scope, &key, now_ms())?,
                depth: depth(conn, &queue)?,
            })
        })
        .await
    }
}
