//! Redis round trips per cart call across the whole mesh: the cart, the catalog and inventory
//! on one redis-server (as `holdfast dev` runs them), counted with `MONITOR`. A round trip is
//! a command a client sent: `MONITOR` shows those with the client's address and the commands
//! a Lua script ran inside Redis as `[<db> lua]`, which are not counted. The background tasks
//! (write-behind, sweeper, rebalancer, relay rescan) are slowed to once an hour so that only
//! the call under test talks to Redis between two markers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdfast_cart::{CartOptions, ViewPath};
use holdfast_inventory::InventoryOptions;
use holdfast_proto::cart::v1::ItemOutcome;
use holdfast_proto::inventory::v1::{
    CommitRequest, GetAvailabilityRequest, ReservationStatus, ReserveLine, ReserveRequest, SetStockRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const HOUR: Duration = Duration::from_secs(3600);

async fn quiet() -> Fixture {
    quiet_with(ViewPath::Script).await
}

async fn quiet_with(view: ViewPath) -> Fixture {
    Fixture::with_inventory(
        CartOptions {
            flush_every: HOUR,
            purge_every: HOUR,
            view,
            ..CartOptions::default()
        },
        InventoryOptions {
            sweep_every: HOUR,
            rebalance_every: HOUR,
            outbox_rescan_every: HOUR,
            ..InventoryOptions::default()
        },
    )
    .await
}

/// A `MONITOR` connection, and a second connection that sends the markers.
struct Monitor {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    _monitor_writer: tokio::net::tcp::OwnedWriteHalf,
    marker: TcpStream,
    markers_sent: u64,
}

impl Monitor {
    async fn start(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (read, mut write) = stream.into_split();
        write.write_all(b"MONITOR\r\n").await.expect("monitor");
        let mut lines = BufReader::new(read).lines();
        let ok = lines.next_line().await.expect("read").expect("reply");
        assert_eq!(ok, "+OK");
        let marker = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        Self {
            lines,
            _monitor_writer: write,
            marker,
            markers_sent: 0,
        }
    }

    /// Sends a marker command and returns what MONITOR showed before it.
    async fn mark(&mut self) -> Vec<String> {
        self.markers_sent += 1;
        let marker = format!("round-trip-marker-{}", self.markers_sent);
        let command = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{marker}\r\n", marker.len());
        self.marker.write_all(command.as_bytes()).await.expect("echo");
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("MONITOR shows the marker")
                .expect("read")
                .expect("line");
            if line.contains(&marker) {
                // The marker connection's reply, read so its buffer never fills.
                let mut reply = vec![0; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut self.marker, &mut reply).await;
                return seen;
            }
            seen.push(line);
        }
    }

    /// The client commands Redis ran while `call` ran (script-internal ones left out).
    async fn during<T>(&mut self, call: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
        self.mark().await;
        let answer = call.await;
        let seen = self.mark().await;
        let sent = seen.into_iter().filter(|line| !line.contains(" lua]")).collect();
        (answer, sent)
    }
}

/// GetCart, AddItem and UpdateItem of a cart with `lines` lines: how many round trips each.
async fn round_trips(lines: usize) -> (usize, usize, usize) {
    round_trips_with(lines, ViewPath::Script).await
}

/// [`round_trips`] with the view read as `view` says.
async fn round_trips_with(lines: usize, view: ViewPath) -> (usize, usize, usize) {
    let fx = quiet_with(view).await;
    let skus: Vec<String> = (0..lines).map(|i| format!("RT-{i}")).collect();
    for sku in &skus {
        fx.sellable(sku, 500).await;
    }
    let mut c = fx.device().await;
    let owner = || customer("round-trips");
    for sku in &skus {
        added(&mut c, owner(), sku, 1).await;
    }
    // Once more, so every cache the fast path reads (the catalog's) is warm.
    let before = get(&mut c, owner()).await;
    assert_eq!(before.lines.len(), lines);

    let mut monitor = Monitor::start(fx.redis.port()).await;
    let (cart, get_sent) = monitor.during(get(&mut c, owner())).await;
    assert_eq!(cart.lines.len(), lines);
    assert!(
        cart.lines
            .iter()
            .all(|l| !l.out_of_stock && l.title.ends_with("title")),
        "{cart:?}"
    );

    let (added, add_sent) = monitor.during(add(&mut c, owner(), &skus[0], 1)).await;
    let added = added.expect("add");
    assert_eq!(added.outcome(), ItemOutcome::Applied);
    let cart = added.cart.expect("cart");
    assert_eq!(
        cart.lines.iter().find(|l| l.sku == skus[0]).map(|l| l.quantity),
        Some(2)
    );
    assert!(
        cart.lines.iter().all(|l| l.current_unit_price.is_some()),
        "{cart:?}"
    );

    let (updated, update_sent) = monitor
        .during(update(&mut c, owner(), &skus[0], 3, cart.version))
        .await;
    let updated = updated.expect("update");
    assert_eq!(updated.outcome(), ItemOutcome::Applied);
    let cart = updated.cart.expect("cart");
    assert_eq!(
        cart.lines.iter().find(|l| l.sku == skus[0]).map(|l| l.quantity),
        Some(3)
    );
    assert!(
        cart.lines.iter().all(|l| l.current_unit_price.is_some()),
        "{cart:?}"
    );

    eprintln!("{lines} lines: GetCart {get_sent:#?}\nAddItem {add_sent:#?}\nUpdateItem {update_sent:#?}");
    (get_sent.len(), add_sent.len(), update_sent.len())
}

/// GetCart and AddItem are one script each (`cart_view.lua`, `cart_add_viewed.lua`: the price
/// and the stock figure read in the script); UpdateItem reads the view, then changes.
#[tokio::test]
async fn get_cart_and_add_item_are_one_round_trip_and_update_item_two_with_one_line() {
    assert_eq!(round_trips(1).await, (1, 1, 2));
}

#[tokio::test]
async fn the_round_trips_do_not_grow_with_the_lines() {
    assert_eq!(round_trips(8).await, (1, 1, 2));
}

/// A catalog cache entry without its `s` field (filled by a build from before the field, or a
/// price the cart's line format cannot hold) sends AddItem down its two-step path: one script
/// that asks, then the view and the change, with the same answer.
#[tokio::test]
async fn a_cache_entry_without_the_sellable_field_takes_the_two_step_path_and_answers_the_same() {
    let fx = quiet().await;
    fx.sellable("OLD-1", 700).await;
    let mut c = fx.device().await;
    let owner = || customer("old-cache-entry");
    added(&mut c, owner(), "OLD-1", 1).await;
    assert_eq!(
        fx.redis.cli(&["HDEL", "cat:{OLD-1}", "s"]).expect("hdel").trim(),
        "1"
    );

    let mut monitor = Monitor::start(fx.redis.port()).await;
    let (answer, sent) = monitor.during(add(&mut c, owner(), "OLD-1", 2)).await;
    let cart = answer.expect("add").cart.expect("cart");
    assert_eq!(lines(&cart), pairs(&[("OLD-1", 3)]));
    let line = &cart.lines[0];
    assert_eq!(
        line.snapshot_unit_price.as_ref().map(|m| m.amount_minor),
        Some(700)
    );
    assert_eq!(line.title, "OLD-1 title");
    assert_eq!(
        sent.len(),
        3,
        "the asking script, the view, the change: {sent:#?}"
    );
}

/// The catalog's cache entry carries whether the product may be sold: an inactive product the
/// cache knows is refused by the one script, and nothing is written.
#[tokio::test]
async fn an_inactive_product_the_cache_knows_is_refused_in_one_round_trip() {
    let fx = quiet().await;
    fx.upsert("OFF-1", 100, "EUR", false).await;
    fx.stock("OFF-1", 5).await;
    let mut c = fx.device().await;
    let owner = || customer("inactive-cached");
    // A cache miss: the catalog answers, and fills its cache.
    let first = add(&mut c, owner(), "OFF-1", 1).await.expect_err("inactive");
    assert_eq!(precondition_kind(&first), "SKU_INACTIVE");

    let mut monitor = Monitor::start(fx.redis.port()).await;
    let (second, sent) = monitor.during(add(&mut c, owner(), "OFF-1", 1)).await;
    assert_eq!(precondition_kind(&second.expect_err("inactive")), "SKU_INACTIVE");
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let cart = get(&mut c, owner()).await;
    assert!(cart.lines.is_empty() && cart.version == 0, "{cart:?}");
}

/// A SKU sold out by sales (nothing on hand, nothing held, units sold) is answered by the
/// counters: the one script refuses it, nothing asked of inventory. Only counters that are all
/// 0 or absent (a Redis that lost the SKU) are inventory's to answer; the script reads `sold`
/// only to tell the two apart.
#[tokio::test]
async fn a_sku_sold_out_by_sales_is_refused_in_one_round_trip() {
    let fx = quiet().await;
    fx.product("GONE", 100, "EUR").await;
    fx.stock("GONE", 2).await;
    let reserved = fx
        .inventory
        .clone()
        .reserve(ReserveRequest {
            reservation_id: "r-gone".into(),
            lines: vec![ReserveLine {
                sku: "GONE".into(),
                quantity: 2,
            }],
            ttl_seconds: 600,
        })
        .await
        .expect("reserve")
        .into_inner();
    assert_eq!(reserved.status(), ReservationStatus::Reserved, "{reserved:?}");
    fx.inventory
        .clone()
        .commit(CommitRequest {
            reservation_id: "r-gone".into(),
            skus: vec!["GONE".into()],
        })
        .await
        .expect("commit");
    fx.product("KEEP", 100, "EUR").await;
    fx.stock("KEEP", 5).await;
    let mut c = fx.device().await;
    let owner = || customer("sold-out");
    // A cart that exists (a refused first line would leave none, and a cold cart costs a
    // look in the durable store), then a cache miss: the catalog answers and fills its cache.
    added(&mut c, owner(), "KEEP", 1).await;
    let first = add(&mut c, owner(), "GONE", 1).await.expect("add");
    assert_eq!(
        (first.outcome(), first.available_quantity),
        (ItemOutcome::OutOfStock, 0)
    );

    let mut monitor = Monitor::start(fx.redis.port()).await;
    let (second, sent) = monitor.during(add(&mut c, owner(), "GONE", 1)).await;
    let second = second.expect("add");
    assert_eq!(
        (second.outcome(), second.available_quantity),
        (ItemOutcome::OutOfStock, 0)
    );
    assert_eq!(sent.len(), 1, "{sent:#?}");
}

/// The products a view script read are kept in the cart's process while the catalog's epoch
/// stands: the next view of the cart reads none of them inside Redis (only the epoch), and a
/// price change, whose invalidation replaces the epoch, is read by the view after it.
#[tokio::test]
async fn a_view_reads_no_kept_product_until_the_catalog_changes() {
    fn product_reads(inside: &[String]) -> usize {
        inside
            .iter()
            .filter(|line| line.contains(" lua] \"HGET\" \"cat:{") && line.ends_with("\"p\""))
            .count()
    }
    let fx = quiet().await;
    for sku in ["KEPT-1", "KEPT-2"] {
        fx.sellable(sku, 500).await;
    }
    let mut c = fx.device().await;
    let owner = || customer("kept");
    added(&mut c, owner(), "KEPT-1", 1).await;
    added(&mut c, owner(), "KEPT-2", 1).await;

    let mut monitor = Monitor::start(fx.redis.port()).await;
    monitor.mark().await;
    let cart = get(&mut c, owner()).await;
    let inside = monitor.mark().await;
    assert_eq!(product_reads(&inside), 0, "{inside:#?}");
    assert!(
        inside
            .iter()
            .any(|line| line.contains(" lua] \"GET\" \"cat:epoch\"")),
        "{inside:#?}"
    );
    assert!(
        cart.lines
            .iter()
            .all(|line| line.title.ends_with("title") && !line.price_changed && !line.out_of_stock),
        "the kept products answer as the cache would: {cart:?}"
    );

    fx.product("KEPT-1", 700, "EUR").await;
    monitor.mark().await;
    let cart = get(&mut c, owner()).await;
    let inside = monitor.mark().await;
    assert_eq!(product_reads(&inside), 2, "the epoch changed: {inside:#?}");
    let kept = cart.lines.iter().find(|line| line.sku == "KEPT-1").expect("line");
    assert_eq!(
        (
            kept.current_unit_price.as_ref().map(|m| m.amount_minor),
            kept.price_changed
        ),
        (Some(700), true)
    );
}

/// A new price reaches the one-script AddItem: the upsert's tombstone drops the cached entry
/// with its `s`, so the next add asks the catalog, which fills both again.
#[tokio::test]
async fn a_new_price_is_the_snapshot_of_the_next_new_line() {
    let fx = quiet().await;
    fx.sellable("NEW-1", 500).await;
    let mut c = fx.device().await;
    added(&mut c, customer("before-the-change"), "NEW-1", 1).await;
    fx.product("NEW-1", 650, "EUR").await;
    let first = added(&mut c, customer("after-the-change"), "NEW-1", 1).await;
    assert_eq!(
        first.lines[0]
            .snapshot_unit_price
            .as_ref()
            .map(|m| m.amount_minor),
        Some(650)
    );
    // And from the refilled cache, in one script, as a new line of a cart that exists.
    fx.sellable("OTHER-1", 100).await;
    added(&mut c, customer("from-the-cache"), "OTHER-1", 1).await;
    let mut monitor = Monitor::start(fx.redis.port()).await;
    let (answer, sent) = monitor
        .during(add(&mut c, customer("from-the-cache"), "NEW-1", 1))
        .await;
    let cart = answer.expect("add").cart.expect("cart");
    let line = cart
        .lines
        .iter()
        .find(|l| l.sku == "NEW-1")
        .expect("the new line");
    assert_eq!(
        line.snapshot_unit_price.as_ref().map(|m| m.amount_minor),
        Some(650)
    );
    assert_eq!(sent.len(), 1, "{sent:#?}");
}

/// `--cart-view rpc` (the switch, and `bench cart`'s baseline) takes the path a cluster takes
/// on a standalone Redis: the cart's hash, then the catalog and inventory per SKU. It answers
/// the same carts (`round_trips_with` checks the lines, titles, prices and quantities).
#[tokio::test]
async fn with_the_view_script_off_the_cart_asks_the_services() {
    let (get, add, update) = round_trips_with(4, ViewPath::Rpc).await;
    // HGETALL, then per SKU at least a catalog cache read and an availability read.
    assert!(get > 2 * 4, "GetCart sent {get} commands");
    assert!(add > 2 * 4 && update > 2, "AddItem {add}, UpdateItem {update}");
}

/// The script reads inventory's counters only where they are the whole answer: units held
/// count against a line, while a SKU split into buckets and a hold that lapsed unpurged are
/// left to inventory, so the cart never answers other than inventory would.
#[tokio::test]
async fn the_one_round_trip_view_answers_what_inventory_answers() {
    // The sweeper is off: a lapsed hold stays unpurged until someone reads around it.
    let fx = quiet().await;
    for sku in ["HELD", "SPLIT", "LAPSE"] {
        fx.product(sku, 100, "EUR").await;
    }
    fx.stock("HELD", 10).await;
    fx.stock("LAPSE", 5).await;
    fx.inventory
        .clone()
        .set_stock(SetStockRequest {
            sku: "SPLIT".into(),
            on_hand: 12,
            buckets: 4,
        })
        .await
        .expect("split stock");
    for (rid, sku, quantity, ttl_seconds) in [("r-held", "HELD", 7, 600), ("r-lapse", "LAPSE", 5, 1)] {
        let reply = fx
            .inventory
            .clone()
            .reserve(ReserveRequest {
                reservation_id: rid.into(),
                lines: vec![ReserveLine {
                    sku: sku.into(),
                    quantity,
                }],
                ttl_seconds,
            })
            .await
            .expect("reserve")
            .into_inner();
        assert_eq!(reply.status(), ReservationStatus::Reserved, "{reply:?}");
    }
    let mut c = fx.device().await;
    let owner = || customer("inventory-says");

    // 10 on hand, 7 held: 3 available.
    let refused = add(&mut c, owner(), "HELD", 4).await.expect("add");
    assert_eq!(
        (refused.outcome(), refused.available_quantity),
        (ItemOutcome::OutOfStock, 3)
    );
    added(&mut c, owner(), "HELD", 3).await;

    // 12 units over 4 buckets: all 12 may be in the cart, not 13.
    added(&mut c, owner(), "SPLIT", 12).await;
    let refused = add(&mut c, owner(), "SPLIT", 1).await.expect("add");
    assert_eq!(
        (refused.outcome(), refused.available_quantity),
        (ItemOutcome::OutOfStock, 12)
    );

    // All 5 held for a second; once inventory counts them free again, so does the cart.
    let refused = add(&mut c, owner(), "LAPSE", 1).await.expect("add");
    assert_eq!(
        (refused.outcome(), refused.available_quantity),
        (ItemOutcome::OutOfStock, 0)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let levels = fx
            .inventory
            .clone()
            .get_availability(GetAvailabilityRequest {
                skus: vec!["LAPSE".into()],
            })
            .await
            .expect("availability")
            .into_inner()
            .levels;
        if levels.first().map(|level| level.available) == Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "the hold never lapsed: {levels:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    added(&mut c, owner(), "LAPSE", 5).await;

    let cart = get(&mut c, owner()).await;
    assert_eq!(
        sorted_lines(&cart),
        pairs(&[("HELD", 3), ("LAPSE", 5), ("SPLIT", 12)])
    );
    assert!(cart.lines.iter().all(|l| !l.out_of_stock), "{cart:?}");
}

/// On a Redis Cluster `cart_view.lua` cannot run (it reads keys of other slots): the cart asks
/// the catalog and inventory over gRPC instead, and answers the same.
#[tokio::test]
async fn on_a_cluster_the_cart_asks_the_services_and_answers_the_same() {
    let fx = Fixture::on_cluster(CartOptions::default(), InventoryOptions::default()).await;
    fx.sellable("CL-1", 250).await;
    fx.product("CL-2", 100, "EUR").await;
    fx.stock("CL-2", 2).await;
    fx.upsert("CL-OFF", 100, "EUR", false).await;
    let mut c = fx.device().await;
    let owner = || customer("on-a-cluster");

    added(&mut c, owner(), "CL-1", 2).await;
    added(&mut c, owner(), "CL-2", 2).await;
    let refused = add(&mut c, owner(), "CL-2", 1).await.expect("add");
    assert_eq!(
        (refused.outcome(), refused.available_quantity),
        (ItemOutcome::OutOfStock, 2)
    );
    let unknown = add(&mut c, owner(), "CL-NOPE", 1).await.expect_err("unknown");
    assert_eq!(precondition_kind(&unknown), "SKU_UNKNOWN");
    let inactive = add(&mut c, owner(), "CL-OFF", 1).await.expect_err("inactive");
    assert_eq!(precondition_kind(&inactive), "SKU_INACTIVE");

    fx.product("CL-1", 300, "EUR").await;
    fx.stock("CL-2", 1).await;
    let cart = get(&mut c, owner()).await;
    let flags: Vec<(&str, bool, bool, Option<i64>)> = cart
        .lines
        .iter()
        .map(|l| {
            (
                l.sku.as_str(),
                l.price_changed,
                l.out_of_stock,
                l.current_unit_price.as_ref().map(|m| m.amount_minor),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [("CL-1", true, false, Some(300)), ("CL-2", false, true, Some(100))]
    );

    let updated = update(&mut c, owner(), "CL-2", 1, cart.version)
        .await
        .expect("update");
    assert_eq!(updated.outcome(), ItemOutcome::Applied);
    let cart = updated.cart.expect("cart");
    assert!(cart.lines.iter().all(|l| !l.out_of_stock), "{cart:?}");
}
