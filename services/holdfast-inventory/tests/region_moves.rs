//! MoveRegionUnits (docs/regions.md, "Moving a dead region's units"): with `eu` down, an
//! operator moves its units to `na`, which sells them; `eu` applies the forced debit once
//! when it is back, the ledger balances and the reconciliation shows zero drift, or the
//! oversold units as drift when `eu` sold them while partitioned. Bad input and non-admin
//! callers are refused.

mod region_support;

use std::time::Duration;

use holdfast_inventory::regions::{self, RegionsConfig};
use holdfast_platform::auth::Role;
use holdfast_platform::events::InProcessBus;
use holdfast_proto::events::v1::{RegionEvent, UnitsMoved, region_event};
use holdfast_proto::inventory::v1::*;
use holdfast_testkit::RedisServer;
use prost::Message;
use region_support::{Region, eventually};
use tonic_types::StatusExt;

/// A region that turns a silent peer stale after 1 s (the move refuses a live source).
fn quick_stale(name: &str) -> RegionsConfig {
    let mut config = region_support::config(name);
    config.stale_after = Duration::from_secs(1);
    config
}

async fn start(name: &str, bus: &InProcessBus, redis: RedisServer) -> Region {
    Region::start_on(name, bus, redis, quick_stale(name)).await
}

/// `na` and `eu` with a global SKU placed by `na`, `total` split evenly, and `na` hearing
/// `eu`'s allocation.
async fn placed(sku: &str, total: i64) -> (InProcessBus, Region, Region) {
    let bus = InProcessBus::new();
    let na = start("na", &bus, RedisServer::start().expect("redis")).await;
    let eu = start("eu", &bus, RedisServer::start().expect("redis")).await;
    let half = total / 2;
    na.client
        .clone()
        .set_global_stock(SetGlobalStockRequest {
            sku: sku.into(),
            total,
            allocations: regions::grpc::allocations(&[("na", half), ("eu", total - half)]),
            placement_id: format!("place-{sku}"),
            buckets: 0,
        })
        .await
        .expect("placed");
    eventually(Duration::from_secs(10), "na to hear eu's allocation", || async {
        na.availability(sku)
            .await
            .regions
            .iter()
            .any(|r| r.region == "eu" && r.on_hand == total - half && !r.stale)
    })
    .await;
    (bus, na, eu)
}

/// Stops `eu` and waits until `na` sees it stale.
async fn kill_eu(na: &Region, eu: Region, sku: &str) -> RedisServer {
    let redis = eu.stop().await;
    eventually(Duration::from_secs(10), "na to see eu stale", || async {
        na.availability(sku)
            .await
            .regions
            .iter()
            .any(|r| r.region == "eu" && r.stale)
    })
    .await;
    redis
}

fn request(sku: &str, units: i64, move_id: &str) -> MoveRegionUnitsRequest {
    MoveRegionUnitsRequest {
        sku: sku.into(),
        from_region: "eu".into(),
        to_region: "na".into(),
        units,
        reason: "INC-42: eu unreachable".into(),
        move_id: move_id.into(),
    }
}

async fn move_units(
    na: &Region,
    request: MoveRegionUnitsRequest,
) -> Result<MoveRegionUnitsResponse, tonic::Status> {
    na.client
        .clone()
        .move_region_units(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Sells `units` in `region` in one reservation, committed.
async fn sell(region: &Region, id: &str, sku: &str, units: i64) -> bool {
    let answer = region
        .client
        .clone()
        .reserve(ReserveRequest {
            reservation_id: id.into(),
            lines: vec![ReserveLine {
                sku: sku.into(),
                quantity: units,
            }],
            ttl_seconds: 60,
        })
        .await
        .expect("reserve")
        .into_inner();
    if answer.status != ReservationStatus::Reserved as i32 {
        return false;
    }
    region
        .client
        .clone()
        .commit(CommitRequest {
            reservation_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("commit");
    true
}

fn precondition_type(status: &tonic::Status) -> String {
    status
        .get_details_precondition_failure()
        .and_then(|d| d.violations.first().map(|v| v.r#type.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_regions_units_move_and_it_applies_the_forced_debit_once_when_back() {
    let sku = "MOVE-1";
    let (bus, na, eu) = placed(sku, 1000).await;
    let alive = move_units(&na, request(sku, 100, "m-early"))
        .await
        .expect_err("eu is alive");
    assert_eq!(alive.code(), tonic::Code::FailedPrecondition);
    assert_eq!(precondition_type(&alive), "SOURCE_ALIVE", "{}", alive.message());

    let mut audit = bus.subscribe(&regions::reconciliation_topic("na"));
    let eu_redis = kill_eu(&na, eu, sku).await;
    let moved = move_units(&na, request(sku, 100, "m-1")).await.expect("moved");
    assert!(moved.moved_now);
    assert_eq!(
        (moved.transfer_id.as_str(), moved.units, moved.operator.as_str()),
        ("move/m-1", 100, "test-admin")
    );
    assert_eq!(moved.local.expect("local").on_hand, 600);
    let again = move_units(&na, request(sku, 100, "m-1")).await.expect("repeat");
    assert!(!again.moved_now, "a repeat of the same move id changes nothing");
    assert_eq!(again.local.expect("local").on_hand, 600);
    let reused = move_units(&na, request(sku, 50, "m-1"))
        .await
        .expect_err("other units");
    assert_eq!(precondition_type(&reused), "MOVE_ID_REUSED");
    let too_many = move_units(&na, request(sku, 401, "m-2"))
        .await
        .expect_err("eu held 500, 100 moved");
    assert_eq!(
        precondition_type(&too_many),
        "TOO_MANY_UNITS",
        "{}",
        too_many.message()
    );

    // na sells its 500 and the 100 moved, and nothing more.
    for i in 0..6 {
        assert!(sell(&na, &format!("na-{i}"), sku, 100).await, "batch {i}");
    }
    assert!(
        !sell(&na, "na-more", sku, 1).await,
        "na has sold everything it holds"
    );
    let down = na.reconciliation(sku).await;
    let report = &down.skus[0];
    assert_eq!(report.drift, 0, "{report:?}");
    assert_eq!(report.pending_forced_debits.len(), 1, "{report:?}");
    assert_eq!(report.pending_forced_debits[0].transfer_id, "move/m-1");

    // eu comes back: the forced debit lands once (na, low with demand, may also get some of
    // eu's remaining units by an ordinary transfer meanwhile).
    let eu = start("eu", &bus, eu_redis).await;
    eventually(Duration::from_secs(10), "na to see eu's forced debit", || async {
        let r = na.reconciliation(sku).await;
        r.skus[0].pending_forced_debits.is_empty()
            && r.skus[0].regions.iter().any(|r| r.region == "eu" && !r.stale)
    })
    .await;
    let replayed = UnitsMoved {
        transfer_id: "move/m-1".into(),
        sku: sku.into(),
        from_region: "eu".into(),
        to_region: "na".into(),
        units: 100,
        moved_at_unix_ms: moved.moved_at_unix_ms,
        operator: "test-admin".into(),
        reason: "replay".into(),
    };
    for _ in 0..3 {
        assert!(
            !eu.regions.apply_move(&replayed).await.expect("replay"),
            "a replayed move debits nothing more"
        );
    }
    let event = regions::flow::to_event(
        "na",
        regions::transfers_topic("na"),
        sku,
        "replayed".into(),
        region_event::Event::Moved(replayed),
    );
    eu.regions
        .apply(&event)
        .await
        .expect("a replayed event is handled");

    eventually(
        Duration::from_secs(15),
        "a settled, consistent reconciliation in both regions",
        || async {
            // Each region reads the other's figures from its own feed: both must have settled.
            let mut settled = true;
            for region in [&na, &eu] {
                let r = region.reconciliation(sku).await;
                settled &=
                    r.consistent && r.skus[0].pending_forced_debits.is_empty() && r.skus[0].in_flight == 0;
            }
            settled
        },
    )
    .await;
    for region in [&na, &eu] {
        let report = region.reconciliation(sku).await;
        let s = &report.skus[0];
        assert_eq!(report.drift_units, 0, "{s:?}");
        assert_eq!((s.on_hand, s.sold), (400, 600), "{s:?}");
        assert_eq!(s.on_hand + s.sold + s.in_flight, 1000, "conservation");
    }

    // The audit record on na's reconciliation topic names the operator, reason and ids.
    let record = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = audit.recv().await.expect("tap");
            if event.event_type == "region.units_moved" {
                return event;
            }
        }
    })
    .await
    .expect("an audit record");
    let decoded = RegionEvent::decode(record.payload.as_slice()).expect("decodes");
    let Some(region_event::Event::Moved(audited)) = decoded.event else {
        panic!("not a move: {decoded:?}");
    };
    assert_eq!(
        (
            audited.transfer_id.as_str(),
            audited.from_region.as_str(),
            audited.to_region.as_str(),
            audited.units,
            audited.operator.as_str(),
            audited.reason.as_str()
        ),
        (
            "move/m-1",
            "eu",
            "na",
            100,
            "test-admin",
            "INC-42: eu unreachable"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_a_partitioned_region_sold_and_an_operator_moved_show_as_drift() {
    let sku = "MOVE-2";
    let (bus, na, eu) = placed(sku, 200).await;
    let eu_redis = kill_eu(&na, eu, sku).await;
    move_units(&na, request(sku, 100, "m-1")).await.expect("moved");
    assert!(sell(&na, "na-all", sku, 200).await);

    // eu was only partitioned: it sells its 100 on a bus of its own.
    let island = InProcessBus::new();
    let eu = start("eu", &island, eu_redis).await;
    assert!(sell(&eu, "eu-all", sku, 100).await);
    let eu_redis = eu.stop().await;

    let eu = start("eu", &bus, eu_redis).await;
    eventually(
        Duration::from_secs(10),
        "eu to apply the forced debit",
        || async {
            eu.availability(sku)
                .await
                .local
                .is_some_and(|l| l.on_hand == -100)
        },
    )
    .await;
    eventually(Duration::from_secs(15), "na to see eu's debit", || async {
        na.reconciliation(sku).await.skus[0]
            .pending_forced_debits
            .is_empty()
    })
    .await;
    let report = na.reconciliation(sku).await;
    let s = &report.skus[0];
    assert!(!report.consistent);
    assert_eq!(s.drift, 100, "the 100 units sold twice: {s:?}");
    assert_eq!(s.sold, 300);
    assert_eq!(s.on_hand + s.sold + s.in_flight, 200, "the ledger balances");
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("region eu") && p.contains("oversold")),
        "{:?}",
        s.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_validates_every_field_and_only_admins_move() {
    let (_bus, na, _eu) = region_support::two_regions().await;
    let bad = move_units(
        &na,
        MoveRegionUnitsRequest {
            sku: "".into(),
            from_region: "mars".into(),
            to_region: "eu".into(),
            units: 0,
            reason: "   ".into(),
            move_id: "".into(),
        },
    )
    .await
    .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let fields = |status: &tonic::Status| -> Vec<String> {
        status
            .get_details_bad_request()
            .expect("bad request")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    };
    let got = fields(&bad);
    for field in ["sku", "from_region", "to_region", "units", "reason", "move_id"] {
        assert!(got.iter().any(|f| f == field), "{field} missing from {got:?}");
    }
    let mut same = request("DROP", 1, "m-1");
    same.from_region = "na".into();
    let same = move_units(&na, same).await.expect_err("from == to");
    assert_eq!(same.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&same), vec!["from_region".to_string()]);

    for role in [Role::Service, Role::Customer] {
        let refused = na
            .client_with(na.tokens.mint(role, Some("someone"), None))
            .move_region_units(request("DROP", 1, "m-2"))
            .await
            .expect_err("not an admin");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{role:?}");
    }
}
