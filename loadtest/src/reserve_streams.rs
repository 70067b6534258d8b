//! Reserves over `ReserveStream`: each caller holds a stream of its own (spread over the same
//! connections as the unary callers) and sends its next Reserve when the last one is answered,
//! so `concurrency` Reserves are in flight, as with the unary callers. Every answer must be the
//! one expected: a hold on a stocked SKU, INSUFFICIENT_STOCK on a sold-out one (a grant there
//! is an oversell).

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::bail;
use futures::StreamExt;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::reserve_stream_response::Outcome;
use holdfast_proto::inventory::v1::{
    ReservationStatus, ReserveLine, ReserveRequest, ReserveStreamRequest, ReserveStreamResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{self, Arrival, LoadResult, Plan, Sample};

/// The answer every Reserve of a run must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// RESERVED: the SKU has the units.
    Reserved,
    /// INSUFFICIENT_STOCK: the SKU sold out.
    SoldOut,
}

/// One caller's stream: requests in, answers out, one in flight.
struct Caller {
    send: mpsc::Sender<ReserveStreamRequest>,
    answers: tonic::Streaming<ReserveStreamResponse>,
}

/// Opens `concurrency` streams round robin over `channels`, then sends `requests` Reserves of
/// one unit of `sku` through them, ids `<label>-<i>`.
pub async fn run(
    channels: &[tonic::transport::Channel],
    concurrency: u64,
    requests: u64,
    label: &str,
    sku: &str,
    expect: Expect,
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
        label: format!("ReserveStream ({label})"),
        progress: true,
    };
    let (label, sku) = (Arc::<str>::from(label), Arc::<str>::from(sku));
    let result = engine::run(&plan, move |i| {
        let (idle, label, sku) = (idle.clone(), label.clone(), sku.clone());
        async move {
            // As many streams as workers: one is always idle when a worker asks.
            let Some(mut caller) = idle.lock().unwrap_or_else(PoisonError::into_inner).pop() else {
                return Sample::wrong("ReserveStream", "no idle stream");
            };
            let sample = attempt(&mut caller, format!("{label}-{i}"), &sku, expect).await;
            idle.lock().unwrap_or_else(PoisonError::into_inner).push(caller);
            sample
        }
    })
    .await;
    if result.errors > 0 {
        bail!(
            "{} of {requests} Reserves over streams were not answered {expect:?}: {:?}",
            result.errors,
            result.ops.get("ReserveStream").map(|o| &o.errors)
        );
    }
    Ok(result)
}

async fn attempt(caller: &mut Caller, rid: String, sku: &str, expect: Expect) -> Sample {
    let request = ReserveRequest {
        reservation_id: rid.clone(),
        lines: vec![ReserveLine {
            sku: sku.into(),
            quantity: 1,
        }],
        ttl_seconds: 600,
    };
    let request = ReserveStreamRequest {
        reserve: Some(request),
    };
    if caller.send.send(request).await.is_err() {
        return Sample::wrong("ReserveStream", "the stream closed");
    }
    let answer = match caller.answers.next().await {
        Some(Ok(answer)) => answer,
        Some(Err(status)) => return Sample::error("ReserveStream", &status),
        None => return Sample::wrong("ReserveStream", "the stream ended"),
    };
    if answer.reservation_id != rid {
        return Sample::wrong("ReserveStream", "another request's answer");
    }
    let status = match answer.outcome {
        Some(Outcome::Reply(reply)) => reply.status,
        Some(Outcome::Error(error)) => {
            let status = tonic::Status::new(tonic::Code::from(error.code), error.message);
            return Sample::error("ReserveStream", &status);
        }
        None => return Sample::wrong("ReserveStream", "an answer without an outcome"),
    };
    match (expect, ReservationStatus::try_from(status)) {
        (Expect::Reserved, Ok(ReservationStatus::Reserved)) => Sample::answer("ReserveStream", "reserved"),
        (Expect::SoldOut, Ok(ReservationStatus::InsufficientStock)) => {
            Sample::answer("ReserveStream", "sold out")
        }
        (Expect::SoldOut, Ok(ReservationStatus::Reserved)) => {
            Sample::wrong("ReserveStream", "granted after sell-out")
        }
        _ => Sample::wrong("ReserveStream", "not held"),
    }
}
