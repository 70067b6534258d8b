//! A key's standing on SQLite: its waiting entry, its claim and the queue's depth in one
//! read transaction.

use super::SqliteStore;
use super::idempotency::select_live;
use super::waiting_room::{depth, position};
use crate::idempotency::validate_key;
use crate::standing::{Standing, StandingStore};
use crate::waiting_room::validate;
use crate::{StoreError, now_ms};

impl StandingStore for SqliteStore {
    async fn standing(&self, queue: &str, scope: &str, key: &str) -> Result<Standing, StoreError> {
        validate(queue, key)?;
        validate_key(scope, key)?;
        let (queue, scope, key) = (queue.to_string(), scope.to_string(), key.to_string());
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
