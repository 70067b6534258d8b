//! Two regions, each with its own redis-server and inventory, over one in-process bus: a
//! regional SKU sells only at home, a global SKU's allocations move to the busy region by
//! transfers, nothing is minted or lost, and the reconciliation agrees.

mod region_support;

use std::time::Duration;

use futures::StreamExt;
use holdfast_inventory::regions;
use holdfast_proto::inventory::v1::*;
use region_support::{Region, eventually, two_regions};
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regional_sku_reserved_in_another_region_names_its_home() {
    let (_bus, na, eu) = two_regions().await;
    na.client
        .clone()
        .set_stock(SetStockRequest {
            sku: "BOOT-42".into(),
            on_hand: 10,
            buckets: 0,
        })
        .await
        .expect("set stock at home");
    eventually(
        Duration::from_secs(10),
        "eu to learn BOOT-42's home and level",
        || async {
            let view = eu.availability("BOOT-42").await;
            view.home_region == "na" && view.regions.iter().any(|r| r.region == "na" && r.on_hand == 10)
        },
    )
    .await;
    let view = eu.availability("BOOT-42").await;
    assert!(!view.sells_here);
    let na_view = view
        .regions
        .iter()
        .find(|r| r.region == "na")
        .expect("na's figure");
    assert_eq!(na_view.available, 10, "eu shows na's stock read-only");

    let refused = eu.reserve("r-eu-1", "BOOT-42").await.expect_err("wrong region");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("region na"), "{}", refused.message());
    let details = refused.get_details_precondition_failure().expect("details");
    assert_eq!(details.violations[0].r#type, "WRONG_REGION");
    assert_eq!(details.violations[0].subject, "BOOT-42");

    let again = eu
        .client
        .clone()
        .set_stock(SetStockRequest {
            sku: "BOOT-42".into(),
            on_hand: 5,
            buckets: 0,
        })
        .await
        .expect_err("eu cannot stock na's SKU");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    let sold = na.reserve("r-na-1", "BOOT-42").await.expect("at home");
    assert_eq!(sold.status, ReservationStatus::Reserved as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_global_stock_validates_every_field() {
    let (_bus, na, _eu) = two_regions().await;
    let bad = na
        .client
        .clone()
        .set_global_stock(SetGlobalStockRequest {
            sku: "".into(),
            total: 10,
            allocations: regions::grpc::allocations(&[("na", 5), ("mars", 4), ("na", 0)]),
            placement_id: "p1".into(),
            buckets: 0,
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .expect("bad request")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in [
        "sku",
        "allocations[1].region",
        "allocations[2].region",
        "allocations",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
}

/// One buyer: tries (new reservation id per attempt) until it holds and commits a unit, or
/// the world is sold out (no region shows a unit, none in flight, twice 300 ms apart).
async fn buy(region: &Region, who: String, sku: &str) -> bool {
    let mut zero_seen = 0;
    for attempt in 0.. {
        let answer = match region.reserve(&format!("{who}-{attempt}"), sku).await {
            Ok(answer) => answer,
            Err(status) if status.code() == tonic::Code::Unavailable => continue,
            Err(status) => panic!("reserve: {status}"),
        };
        if answer.status == ReservationStatus::Reserved as i32 {
            region
                .client
                .clone()
                .commit(CommitRequest {
                    reservation_id: format!("{who}-{attempt}"),
                    ..Default::default()
                })
                .await
                .expect("commit");
            return true;
        }
        let world = region.availability(sku).await;
        if world.world_available == 0 && world.in_flight == 0 && world.regions.len() == 2 {
            zero_seen += 1;
            if zero_seen >= 2 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            zero_seen = 0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_sku_sells_exactly_its_total_across_regions_through_transfers() {
    let (_bus, na, eu) = two_regions().await;
    let placed = na
        .client
        .clone()
        .set_global_stock(SetGlobalStockRequest {
            sku: "DROP-1".into(),
            total: 1000,
            allocations: regions::grpc::allocations(&[("na", 500), ("eu", 500)]),
            placement_id: "drop-1".into(),
            buckets: 0,
        })
        .await
        .expect("placed")
        .into_inner();
    assert_eq!(placed.local.expect("local").on_hand, 500);
    eventually(Duration::from_secs(10), "eu's allocation", || async {
        eu.availability("DROP-1")
            .await
            .local
            .is_some_and(|l| l.on_hand == 500)
    })
    .await;

    let na_buyers = futures::stream::iter(0..1500)
        .map(|i| buy(&na, format!("na-{i}"), "DROP-1"))
        .buffer_unordered(48)
        .filter(|won| futures::future::ready(*won))
        .count();
    let eu_buyers = futures::stream::iter(0..100)
        .map(|i| buy(&eu, format!("eu-{i}"), "DROP-1"))
        .buffer_unordered(16)
        .filter(|won| futures::future::ready(*won))
        .count();
    let (na_won, eu_won) = tokio::join!(na_buyers, eu_buyers);
    assert_eq!(eu_won, 100, "every eu buyer found a unit");
    assert_eq!(na_won + eu_won, 1000, "winners = min(stock, buyers)");
    assert!(
        na_won > 500,
        "na sold past its allocation through transfers: {na_won}"
    );

    eventually(
        Duration::from_secs(15),
        "a settled, consistent reconciliation in both regions",
        || async {
            // Each region reads the other's figures from its own feed: both must have settled.
            let mut settled = true;
            for region in [&na, &eu] {
                let r = region.reconciliation("DROP-1").await;
                settled &= r.consistent && r.skus[0].in_flight == 0;
            }
            settled
        },
    )
    .await;
    for region in [&na, &eu] {
        let report = region.reconciliation("DROP-1").await;
        let sku = &report.skus[0];
        assert_eq!(report.drift_units, 0);
        assert_eq!(sku.global_total, 1000);
        assert_eq!(sku.sold, 1000, "{sku:?}");
        assert_eq!(sku.on_hand + sku.sold + sku.in_flight, 1000, "conservation");
    }
    let levels = [na.availability("DROP-1").await, eu.availability("DROP-1").await];
    let sold: i64 = levels.iter().map(|l| l.local.as_ref().expect("local").sold).sum();
    assert_eq!(sold, 1000);
    assert_eq!(levels[0].local.as_ref().expect("local").sold, na_won as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_is_debited_once_and_credited_once_however_often_it_is_driven() {
    let (_bus, na, eu) = two_regions().await;
    na.client
        .clone()
        .set_global_stock(SetGlobalStockRequest {
            sku: "DROP-2".into(),
            total: 100,
            allocations: regions::grpc::allocations(&[("na", 60), ("eu", 40)]),
            placement_id: "drop-2".into(),
            buckets: 0,
        })
        .await
        .expect("placed");
    eventually(Duration::from_secs(10), "eu's allocation", || async {
        eu.availability("DROP-2")
            .await
            .local
            .is_some_and(|l| l.on_hand == 40)
    })
    .await;
    let request = holdfast_proto::events::v1::TransferRequested {
        request_id: "t-1".into(),
        sku: "DROP-2".into(),
        from_region: "eu".into(),
        to_region: "na".into(),
        units: 25,
    };
    assert_eq!(eu.regions.give(&request).await.expect("give"), 25);
    assert_eq!(
        eu.regions.give(&request).await.expect("repeat"),
        25,
        "a repeat answers the same debit"
    );
    let debit = holdfast_proto::events::v1::TransferDebited {
        transfer_id: "t-1".into(),
        sku: "DROP-2".into(),
        from_region: "eu".into(),
        to_region: "na".into(),
        units: 25,
        debited_at_unix_ms: holdfast_platform::clock::now_ms(),
    };
    // The relay delivers it too; extra credits by the same id change nothing.
    for _ in 0..3 {
        na.regions.credit(&debit).await.expect("credit");
    }
    eventually(Duration::from_secs(10), "both ledgers settled", || async {
        let r = eu.reconciliation("DROP-2").await;
        r.consistent && r.skus[0].in_flight == 0
    })
    .await;
    assert_eq!(eu.availability("DROP-2").await.local.expect("eu").on_hand, 15);
    assert_eq!(na.availability("DROP-2").await.local.expect("na").on_hand, 85);
}
