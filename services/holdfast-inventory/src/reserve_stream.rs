//! `ReserveStream`: many Reserves over one stream, each worked by the same code as the unary
//! call (`Inventory::reserve_one`: same checks, admission and idempotency), at most
//! [`IN_FLIGHT`] of a stream at once, answered as each completes.
//!
//! The answers are worked inside the stream's own response task: no task per request, no
//! span per request (the stream has one), and a request costs one HTTP/2 DATA frame each way
//! instead of a whole call. A caller that forwards many buyers' attempts (a mobile backend in
//! a flash sale) pays that instead of a call's headers, stream set-up and tower stack.
//!
//! When the server drains, a stream reads no further request, answers those it has read, and
//! ends with `UNAVAILABLE` ([`DRAINING`]): the caller reopens it (on another replica) and sends
//! again what got no answer, which is safe, as every Reserve is idempotent by its id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::inventory::v1::{
    ReserveRequest, ReserveResponse, ReserveStreamError, ReserveStreamRequest, ReserveStreamResponse,
    reserve_stream_response::Outcome,
};
use tonic::Status;

/// Requests of one stream worked on at once; the next is read when one is answered.
pub const IN_FLIGHT: usize = 64;

/// The message of the status a stream ends with when the server drains.
pub const DRAINING: &str = "the server is draining: this stream ends here; reopen it and resend \
     the requests that got no answer (each is idempotent by its reservation_id)";

/// The answers of one stream, as tonic sends them.
pub type Answers = Pin<Box<dyn Stream<Item = Result<ReserveStreamResponse, Status>> + Send>>;

/// Works `requests` through `reserve` (one Reserve, as the unary call). A request's error is
/// its answer (a request without its Reserve is INVALID_ARGUMENT); an error reading the stream
/// ends it. Once `drain` resolves no further request is read: those read are answered, then
/// the stream ends with `UNAVAILABLE` ([`DRAINING`]).
pub(crate) fn answers<S, D, F, Fut>(requests: S, drain: D, reserve: F) -> Answers
where
    S: Stream<Item = Result<ReserveStreamRequest, Status>> + Send + 'static,
    D: Future<Output = ()> + Send + 'static,
    F: Fn(ReserveRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ReserveResponse, Status>> + Send + 'static,
{
    let drained = Arc::new(AtomicBool::new(false));
    let stop = {
        let drained = Arc::clone(&drained);
        async move {
            drain.await;
            drained.store(true, Ordering::Release);
        }
    };
    let farewell = futures::stream::once(async move {
        drained
            .load(Ordering::Acquire)
            .then(|| Err(Status::unavailable(DRAINING)))
    })
    .filter_map(std::future::ready);
    Box::pin(
        requests
            .take_until(stop)
            .map(move |request| {
                let answer = request.map(|request| match request.reserve {
                    Some(request) => (request.reservation_id.clone(), Some(reserve(request))),
                    None => (String::new(), None),
                });
                async move {
                    let (reservation_id, answer) = answer?;
                    let answer = match answer {
                        Some(answer) => answer.await,
                        None => Err(missing_reserve()),
                    };
                    let outcome = match answer {
                        Ok(reply) => Outcome::Reply(reply),
                        Err(status) => Outcome::Error(error_of(&status)),
                    };
                    Ok(ReserveStreamResponse {
                        reservation_id,
                        outcome: Some(outcome),
                    })
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .chain(farewell),
    )
}

fn missing_reserve() -> Status {
    let mut violations = FieldViolations::new();
    violations.add("reserve", "required: the Reserve this request carries");
    violations
        .into_result()
        .err()
        .unwrap_or_else(|| Status::invalid_argument("reserve: required"))
}

/// What the unary call's status would carry: code, message and the encoded details.
fn error_of(status: &Status) -> ReserveStreamError {
    ReserveStreamError {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: status.details().to_vec(),
    }
}
