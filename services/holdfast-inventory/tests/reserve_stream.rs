//! `ReserveStream` on a real redis-server: every request answered as the unary Reserve would
//! answer it (grants, refusals, repeats, errors with their details, the SKU's rate limit), the
//! stream going on after a request's error, no unit sold twice when more requests arrive than
//! it works at once, and an open stream ended (UNAVAILABLE) by the server's drain.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Fixture;
use holdfast_inventory::Inventory;
use holdfast_inventory::reserve_stream::{DRAINING, IN_FLIGHT};
use holdfast_platform::admission::RateLimit;
use holdfast_platform::drain::Draining;
use holdfast_platform::{GrpcServer, ServerOptions};
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use holdfast_proto::inventory::v1::reserve_stream_response::Outcome;
use holdfast_proto::inventory::v1::{
    ReservationStatus, ReserveLine, ReserveRequest, ReserveResponse, ReserveStreamRequest,
    ReserveStreamResponse,
};
use holdfast_testkit::SpawnedServer;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

fn request(rid: &str, sku: &str, quantity: i64, ttl_seconds: u32) -> ReserveStreamRequest {
    ReserveStreamRequest {
        reserve: Some(ReserveRequest {
            reservation_id: rid.into(),
            lines: vec![ReserveLine {
                sku: sku.into(),
                quantity,
            }],
            ttl_seconds,
        }),
    }
}

/// An open stream: requests go in through `send`, answers come out of `answers`.
struct Open {
    send: mpsc::Sender<ReserveStreamRequest>,
    answers: tonic::Streaming<ReserveStreamResponse>,
}

impl Open {
    async fn new(fx: &Fixture) -> Self {
        Self::on(fx.client.clone()).await
    }

    async fn on(mut client: InventoryServiceClient<tonic::transport::Channel>) -> Self {
        // A small channel: the client waits for the server to read, as a real caller would.
        let (send, receive) = mpsc::channel(4);
        let answers = client
            .reserve_stream(ReceiverStream::new(receive))
            .await
            .expect("stream opens")
            .into_inner();
        Self { send, answers }
    }

    async fn next(&mut self) -> ReserveStreamResponse {
        self.answers
            .next()
            .await
            .expect("an answer before the stream ends")
            .expect("the stream does not fail")
    }

    /// Sends `requests` and reads as many answers, by reservation id.
    async fn round(&mut self, requests: Vec<ReserveStreamRequest>) -> HashMap<String, Outcome> {
        let n = requests.len();
        let send = self.send.clone();
        let sender = tokio::spawn(async move {
            for request in requests {
                send.send(request).await.expect("the server reads");
            }
        });
        let mut by_id = HashMap::new();
        for _ in 0..n {
            let answer = self.next().await;
            let outcome = answer.outcome.expect("every answer has an outcome");
            assert!(
                by_id.insert(answer.reservation_id.clone(), outcome).is_none(),
                "one answer per request: {} twice",
                answer.reservation_id
            );
        }
        sender.await.expect("sender");
        by_id
    }
}

fn reply(outcome: &Outcome) -> &ReserveResponse {
    match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::Error(error) => panic!("an error where a reply was due: {error:?}"),
    }
}

fn status_of(reply: &ReserveResponse) -> ReservationStatus {
    ReservationStatus::try_from(reply.status).expect("a known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_answers_each_reserve_as_the_unary_call_and_goes_on_after_an_error() {
    let fx = Fixture::standalone().await;
    fx.set_stock("STREAM-A", 3, 1).await;
    let mut stream = Open::new(&fx).await;

    let mut first: Vec<ReserveStreamRequest> = (0..5)
        .map(|i| request(&format!("s-{i}"), "STREAM-A", 1, 600))
        .collect();
    first.push(request("bad-ttl", "STREAM-A", 1, 7200));
    let answers = stream.round(first).await;
    assert_eq!(answers.len(), 6);
    let granted: Vec<&String> = answers
        .iter()
        .filter(|(id, _)| id.starts_with("s-"))
        .filter(|(_, outcome)| status_of(reply(outcome)) == ReservationStatus::Reserved)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(granted.len(), 3, "three units, three grants: {answers:?}");
    for (id, outcome) in answers.iter().filter(|(id, _)| id.starts_with("s-")) {
        let reply = reply(outcome);
        match status_of(reply) {
            ReservationStatus::Reserved => assert!(reply.expires_at_unix_ms > 0, "{id}: {reply:?}"),
            ReservationStatus::InsufficientStock => {
                assert_eq!(reply.shortages.len(), 1, "{id}: {reply:?}");
                assert_eq!(reply.shortages[0].sku, "STREAM-A");
            }
            other => panic!("{id}: {other:?}"),
        }
    }

    // The bad request's answer is the unary call's error, details and all.
    let Outcome::Error(error) = &answers["bad-ttl"] else {
        panic!("a TTL over an hour is refused: {:?}", answers["bad-ttl"]);
    };
    assert_eq!(Code::from(error.code), Code::InvalidArgument, "{error:?}");
    let status = tonic::Status::with_details(
        Code::from(error.code),
        &error.message,
        error.details.clone().into(),
    );
    let bad_request = status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest rides along");
    assert_eq!(bad_request.field_violations[0].field, "ttl_seconds");
    let unary = fx
        .reserve("bad-ttl", &[("STREAM-A", 1)], 7200)
        .await
        .expect_err("the unary call refuses it too");
    assert_eq!(
        (unary.code(), unary.message()),
        (Code::InvalidArgument, error.message.as_str())
    );

    // The same stream goes on: repeats answer their first answer, a new id finds no stock.
    let winner = granted[0].clone();
    let loser = answers
        .keys()
        .find(|id| id.starts_with("s-") && !granted.contains(id))
        .expect("a refused id")
        .clone();
    let again = stream
        .round(vec![
            request(&winner, "STREAM-A", 1, 600),
            request(&loser, "STREAM-A", 1, 600),
            request("late", "STREAM-A", 1, 600),
        ])
        .await;
    assert_eq!(status_of(reply(&again[&winner])), ReservationStatus::Reserved);
    assert_eq!(
        reply(&again[&winner]).expires_at_unix_ms,
        reply(&answers[&winner]).expires_at_unix_ms,
        "a repeat is its first answer"
    );
    assert_eq!(
        status_of(reply(&again[&loser])),
        ReservationStatus::InsufficientStock
    );
    assert_eq!(
        status_of(reply(&again["late"])),
        ReservationStatus::InsufficientStock
    );

    // A request of a conflicting shape under a used id is the unary call's error too.
    let conflict = stream.round(vec![request(&winner, "STREAM-A", 2, 600)]).await;
    let Outcome::Error(error) = &conflict[&winner] else {
        panic!("another request under a used id is refused: {conflict:?}");
    };
    let unary = fx
        .reserve(&winner, &[("STREAM-A", 2)], 600)
        .await
        .expect_err("the unary call refuses it too");
    assert_eq!(Code::from(error.code), unary.code(), "{error:?} / {unary:?}");

    // A request without its Reserve is refused, the stream going on.
    let missing = stream.round(vec![ReserveStreamRequest { reserve: None }]).await;
    let Outcome::Error(error) = &missing[""] else {
        panic!("a request without a Reserve is refused: {missing:?}");
    };
    assert_eq!(Code::from(error.code), Code::InvalidArgument, "{error:?}");
    let status = tonic::Status::with_details(
        Code::from(error.code),
        &error.message,
        error.details.clone().into(),
    );
    assert_eq!(
        status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field,
        "reserve"
    );

    drop(stream.send);
    assert!(
        stream.answers.next().await.is_none(),
        "the stream ends cleanly when the caller stops sending"
    );
    let level = fx.level("STREAM-A").await;
    assert_eq!((level.on_hand, level.reserved, level.available), (3, 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_requests_than_a_stream_works_at_once_sell_each_unit_once() {
    let fx = Fixture::standalone().await;
    const UNITS: i64 = 150;
    let requests = 4 * IN_FLIGHT + 7;
    fx.set_stock("STREAM-B", UNITS, 1).await;
    let mut stream = Open::new(&fx).await;
    let answers = stream
        .round(
            (0..requests)
                .map(|i| request(&format!("b-{i}"), "STREAM-B", 1, 600))
                .collect(),
        )
        .await;
    assert_eq!(answers.len(), requests, "one answer per request");
    let granted = answers
        .values()
        .filter(|outcome| status_of(reply(outcome)) == ReservationStatus::Reserved)
        .count();
    assert_eq!(granted as i64, UNITS, "every unit once, none twice");
    let level = fx.level("STREAM-B").await;
    assert_eq!((level.reserved, level.available), (UNITS, 0));
    // Each grant is a hold the unary calls see: releasing one frees its unit.
    let (winner, _) = answers
        .iter()
        .find(|(_, outcome)| status_of(reply(outcome)) == ReservationStatus::Reserved)
        .expect("a winner");
    assert_eq!(fx.release(winner).await.expect("release").released_units, 1);
    assert_eq!(fx.level("STREAM-B").await.available, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skus_reserve_limit_counts_the_requests_of_a_stream_as_calls() {
    let mut fx = Fixture::standalone().await;
    fx.set_stock("STREAM-LIMITED", 100, 1).await;
    // The same engine behind a server that limits Reserve to a burst of 2 per SKU.
    let (_server, client) = fx
        .limited_server(RateLimit {
            per_second: 0.01,
            burst: 2,
        })
        .await;
    let mut stream = Open::on(client.clone()).await;

    let answers = stream
        .round(
            (0..5)
                .map(|i| request(&format!("l-{i}"), "STREAM-LIMITED", 1, 600))
                .collect(),
        )
        .await;
    let (mut held, mut limited) = (0, 0);
    for (id, outcome) in &answers {
        match outcome {
            Outcome::Reply(reply) => {
                assert_eq!(status_of(reply), ReservationStatus::Reserved, "{id}: {reply:?}");
                held += 1;
            }
            Outcome::Error(error) => {
                assert_eq!(Code::from(error.code), Code::ResourceExhausted, "{id}: {error:?}");
                let status = tonic::Status::with_details(
                    Code::from(error.code),
                    &error.message,
                    error.details.clone().into(),
                );
                let details = status.get_error_details();
                assert!(details.retry_info().is_some(), "{id}: RetryInfo rides along");
                let quota = details.quota_failure().expect("a QuotaFailure");
                assert_eq!(quota.violations[0].subject, "sku:STREAM-LIMITED");
                limited += 1;
            }
        }
    }
    assert_eq!(
        (held, limited),
        (2, 3),
        "the burst of 2, then the limit: {answers:?}"
    );
    // The stream spent the SKU's burst: a unary call now is refused as well.
    let unary = client
        .clone()
        .reserve(ReserveRequest {
            reservation_id: "l-unary".into(),
            lines: vec![ReserveLine {
                sku: "STREAM-LIMITED".into(),
                quantity: 1,
            }],
            ttl_seconds: 600,
        })
        .await
        .expect_err("over the limit");
    assert_eq!(unary.code(), Code::ResourceExhausted);
    assert_eq!(
        fx.level("STREAM-LIMITED").await.reserved,
        2,
        "only the admitted are held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_server_ends_an_open_stream_unavailable_instead_of_waiting_out_the_drain() {
    let fx = Fixture::standalone().await;
    fx.set_stock("STREAM-DRAIN", 10, 1).await;
    let draining = Draining::default();
    // A drain timeout far beyond the waits below: the stream must end because of the drain,
    // not because the server gave up on it.
    let mut grpc = GrpcServer::new(ServerOptions {
        drain_timeout: Duration::from_secs(120),
        ..ServerOptions::default()
    });
    grpc.drain_with(&draining).add_service(
        "inventory",
        InventoryServiceServer::new(
            Inventory::new(fx.inventory.stock.clone()).with_draining(draining.clone()),
        ),
    );
    let server = SpawnedServer::start(grpc).await.expect("server");
    let mut stream = Open::on(InventoryServiceClient::new(
        server.channel().await.expect("connect"),
    ))
    .await;
    let answers = stream
        .round(vec![
            request("drain-1", "STREAM-DRAIN", 1, 600),
            request("drain-2", "STREAM-DRAIN", 2, 600),
        ])
        .await;
    assert!(answers.values().all(|outcome| matches!(outcome, Outcome::Reply(reply) if reply.status == ReservationStatus::Reserved as i32)));

    // The process is told to stop while the caller still holds its stream open.
    let stopping = tokio::spawn(server.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(20), stream.answers.next())
        .await
        .expect("the stream ends at the drain, long before the drain timeout");
    let Some(Err(status)) = end else {
        panic!("the stream ends with a status, got {end:?}")
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        DRAINING,
        "the caller is told to reopen and resend"
    );
    assert!(draining.is_draining());
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the server finishes draining without waiting out its timeout")
        .expect("joins")
        .expect("serves cleanly");
    // What was answered stands; the caller's next stream goes to another server.
    let level = fx.level("STREAM-DRAIN").await;
    assert_eq!((level.reserved, level.available), (3, 7));
}
