//! The sold-out phase over `ReserveStream`: each caller holds a stream of its own (spread over
//! the same connections as the unary callers) and sends its next attempt when the last one is
//! answered, so `concurrency` attempts are in flight, as with the unary callers. Every answer
//! must be INSUFFICIENT_STOCK (a grant after the sell-out is an oversell).

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::bail;
use futures::StreamExt;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::reserve_stream_answer::Outcome;
use holdfast_proto::inventory::v1::{ReservationStatus, ReserveLine, ReserveRequest, ReserveStreamAnswer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{self, Arrival, LoadResult, Plan, Sample};

/// One caller's stream: requests in, answers out, one in flight.
struct Caller {
    send: mpsc::Sender<ReserveRequest>,
    answers: tonic::Streaming<ReserveStreamAnswer>,
}

/// Opens `concurrency` streams round robin over `channels`, then sends `requests` Reserves of
/// one unit of `sku` through them.
pub async fn run(
    channels: &[tonic::transport::Channel],
    concurrency: u64,
    requests: u64,
    sku: &'static str,
) -> anyhow::Result<LoadResult> {
    let mut callers = Vec::new();
    for i in 0..concurrency.max(1) as usize {
        let (send, receive) = mpsc::channel(1);
        let answers = InventoryServiceClient::new(channels[i % channels.len()].clone())
            .reserve_stream(ReceiverStream::new(receive))
            .await?
            .into_inner();
        callers.push(Caller { send, answers });
    }
    let idle = Arc::new(Mutex::new(callers));
    let plan = Plan {
        arrival: Arrival::Closed {
            concurrency: concurrency as usize,
        },
        attempts: Some(requests),
        duration: None,
        label: "ReserveStream (sold out)".into(),
        progress: true,
    };
    let result = engine::run(&plan, move |i| {
        let idle = idle.clone();
        async move {
            // As many streams as workers: one is always idle when a worker asks.
            let Some(mut caller) = idle.lock().unwrap_or_else(PoisonError::into_inner).pop() else {
                return Sample::wrong("ReserveStream", "no idle stream");
            };
            let sample = attempt(&mut caller, i, sku).await;
            idle.lock().unwrap_or_else(PoisonError::into_inner).push(caller);
            sample
        }
    })
    .await;
    if result.errors > 0 {
        bail!(
            "{} of {requests} sold-out Reserves over streams were not answered INSUFFICIENT_STOCK: {:?}",
            result.errors,
            result.ops.get("ReserveStream").map(|o| &o.errors)
        );
    }
    Ok(result)
}

async fn attempt(caller: &mut Caller, i: u64, sku: &str) -> Sample {
    let rid = format!("soldout-stream-{i}");
    let request = ReserveRequest {
        reservation_id: rid.clone(),
        lines: vec![ReserveLine {
            sku: sku.into(),
            quantity: 1,
        }],
        ttl_seconds: 600,
    };
    if caller.send.send(request).await.is_err() {
        return Sample::wrong("ReserveStream", "the stream closed");
    }
    match caller.answers.next().await {
        Some(Ok(answer)) if answer.reservation_id != rid => {
            Sample::wrong("ReserveStream", "another request's answer")
        }
        Some(Ok(ReserveStreamAnswer {
            outcome: Some(Outcome::Reply(reply)),
            ..
        })) if reply.status == ReservationStatus::InsufficientStock as i32 => {
            Sample::answer("ReserveStream", "sold out")
        }
        Some(Ok(ReserveStreamAnswer {
            outcome: Some(Outcome::Reply(_)),
            ..
        })) => Sample::wrong("ReserveStream", "granted after sell-out"),
        Some(Ok(ReserveStreamAnswer {
            outcome: Some(Outcome::Error(error)),
            ..
        })) => Sample::error(
            "ReserveStream",
            &tonic::Status::new(tonic::Code::from(error.code), error.message),
        ),
        Some(Ok(_)) => Sample::wrong("ReserveStream", "an answer without an outcome"),
        Some(Err(status)) => Sample::error("ReserveStream", &status),
        None => Sample::wrong("ReserveStream", "the stream ended"),
    }
}
