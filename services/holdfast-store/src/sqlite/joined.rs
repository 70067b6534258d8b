//! Joined saga transitions on SQLite: the joined writes and the transition in one writer
//! job, so one savepoint (and one commit) holds all of them.

use super::SqliteStore;
use super::idempotency::complete_key_on;
use super::orders::{insert_order, update_order_on};
use super::sagas::transition_on;
use crate::StoreError;
use crate::idempotency::validate_key;
use crate::joined::{JoinedWrite, JoinedWriteStore};
use crate::orders::{validate_order, validate_order_id};
use crate::outbox::distinct_messages;
use crate::sagas::validate_saga_id;
use crate::{OutboxMessage, SagaRecord, SagaTransition};

impl JoinedWriteStore for SqliteStore {
    async fn transition_saga_joined(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
        joined: Vec<JoinedWrite>,
    ) -> Result<SagaRecord, StoreError> {
        validate_saga_id(id)?;
        let mut joined = joined;
        for write in &mut joined {
            match write {
                JoinedWrite::CreateOrder(order) => validate_order(order)?,
                JoinedWrite::UpdateOrder { order, outbox, .. } => {
                    validate_order_id(&order.id)?;
                    *outbox = distinct_messages(std::mem::take(outbox))?;
                }
                JoinedWrite::CompleteKey { scope, key, .. } => validate_key(scope, key)?,
            }
        }
        let outbox = distinct_messages(outbox)?;
        let id = id.to_string();
        self.write(move |conn| {
            for write in joined {
                match write {
                    JoinedWrite::CreateOrder(order) => {
                        insert_order(conn, order)?;
                    }
                    JoinedWrite::UpdateOrder {
                        order,
                        expected_version,
                        outbox,
                    } => {
                        update_order_on(conn, order, expected_version, &outbox)?;
                    }
                    JoinedWrite::CompleteKey { scope, key, response } => {
                        // A key no longer live: nobody is left to answer.
                        complete_key_on(conn, &scope, &key, &response)?;
                    }
                }
            }
            transition_on(conn, id, expected_version, transition, &outbox)
        })
        .await
    }
}
