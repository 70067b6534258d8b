//! `holdfast-load checkout-storm`: N customers with full carts check out at once.
//!
//! A share of them lose the first answer — half by a client deadline cut short (the call is
//! abandoned mid-saga), half by ignoring a response that did arrive — and retry with the same
//! idempotency key, as a phone on a bad network does. A share pay with cards that fail
//! (`pm_card_declined` always; `pm_card_flaky` fails its first authorization). Then orders,
//! the payment ledger, stock and carts are read back: one charge per key, no order without a
//! charge, no charge without an order, replays answered the first answer, declined carts kept,
//! placed carts cleared, stock conserved.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use holdfast_platform::config::parse_duration;
use holdfast_proto::cart::v1::cart_owner::Owner;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner, GetCartRequest, ItemOutcome};
use holdfast_proto::inventory::v1::SetStockRequest;
use holdfast_proto::orders::v1::CheckoutRequest;
use holdfast_proto::orders::v1::checkout_request::Source;
use tokio::time::Instant;

use crate::audit::{self, Attempted, CheckoutAnswer};
use crate::engine::{self, Sample};
use crate::mesh::Mesh;
use crate::report::{Check, RunReport};
use crate::scenario::{
    RunArgs, Share, for_each_concurrent, request, retryable, sample_list, shuffled_roles, splitmix, unix_ms,
    with_retries,
};

/// Flags of `checkout-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckoutStormArgs {
    /// Target, load shape and output.
    #[command(flatten)]
    pub run: RunArgs,
    /// Customers, each with a cart, each checking out once.
    #[arg(long, default_value_t = 2_000)]
    pub customers: u64,
    /// Products the carts are filled from.
    #[arg(long, default_value_t = 10)]
    pub products: u64,
    /// Lines per cart (one unit each).
    #[arg(long, default_value_t = 2)]
    pub lines: u64,
    /// Units of each product [default: enough for every cart].
    #[arg(long)]
    pub stock: Option<i64>,
    /// Share of customers whose first answer is lost, then retried with the same key.
    #[arg(long, default_value = "10%", value_parser = Share::parse)]
    pub drop: Share,
    /// The cut-short client deadline of a dropped first call.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub drop_deadline: Duration,
    /// Share of customers paying with pm_card_declined.
    #[arg(long, default_value = "5%", value_parser = Share::parse)]
    pub declined: Share,
    /// Share of customers paying with pm_card_flaky (first authorization UNAVAILABLE).
    #[arg(long, default_value = "5%", value_parser = Share::parse)]
    pub flaky: Share,
}

const CARDS: [&str; 3] = ["pm_card_visa", "pm_card_declined", "pm_card_flaky"];

/// What one customer's storm came to.
#[derive(Debug, Clone)]
struct Told {
    answer: CheckoutAnswer,
    /// The answer to the first (dropped) call, when one arrived.
    first: Option<CheckoutAnswer>,
}

fn owner(customer: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(customer.to_string())),
    })
}

/// Runs `checkout-storm`; answers the exit code.
pub async fn run(args: CheckoutStormArgs) -> anyhow::Result<i32> {
    let run = args.run.clone();
    let report = run_report(args).await?;
    run.finish(&report)
}

/// Runs the scenario; answers its report (not yet printed or written).
pub async fn run_report(args: CheckoutStormArgs) -> anyhow::Result<RunReport> {
    crate::scenario::check_rate(&args.run)?;
    anyhow::ensure!(
        args.customers > 0 && args.products > 0,
        "--customers and --products must be positive"
    );
    anyhow::ensure!(
        (1..=args.products.min(99)).contains(&args.lines),
        "--lines is 1..min(--products, 99)"
    );
    anyhow::ensure!(
        args.declined.0 + args.flaky.0 <= 1.0,
        "--declined and --flaky add up to more than 100%"
    );
    let n = args.customers;
    let mesh = Arc::new(Mesh::connect(&args.run.target).await?);
    let run_id = args.run.run_id();
    let started_ms = unix_ms();
    let skus: Vec<String> = (0..args.products).map(|i| format!("{run_id}-S{i:04}")).collect();
    let cart_skus = |c: u64| -> Vec<usize> {
        (0..args.lines)
            .map(|k| ((c + k * (args.products / args.lines).max(1)) % args.products) as usize)
            .collect()
    };
    let mut demand = vec![0i64; skus.len()];
    for c in 0..n {
        for s in cart_skus(c) {
            demand[s] += 1;
        }
    }
    let stock = args.stock.unwrap_or_else(|| *demand.iter().max().unwrap_or(&0));
    let n_declined = args.declined.of(n).min(n);
    let n_flaky = args.flaky.of(n).min(n - n_declined);
    let cards: Vec<usize> = shuffled_roles(&[n - n_declined - n_flaky, n_declined, n_flaky], args.run.seed);
    let dropped: Vec<bool> = shuffled_roles(
        &[n - args.drop.of(n).min(n), args.drop.of(n).min(n)],
        args.run.seed ^ 0xD0,
    )
    .into_iter()
    .map(|r| r == 1)
    .collect();
    println!(
        "checkout-storm {run_id}: {n} customers x {} lines over {} products ({stock} units each); {} drop their first answer, {n_declined} pm_card_declined, {n_flaky} pm_card_flaky; against {}",
        args.lines,
        args.products,
        dropped.iter().filter(|d| **d).count(),
        mesh.endpoint
    );

    // Products, stock and carts (set-up, not measured).
    for_each_concurrent(skus.iter().enumerate(), 8, |(i, sku)| {
        let mesh = &mesh;
        async move {
            crate::scenario::upsert_product(
                &mut mesh.catalog(i as u64),
                sku,
                &format!("Storm product {i}"),
                1_000 + 10 * i as i64,
                "load/storm",
            )
            .await?;
            mesh.inventory(i as u64)
                .set_stock(SetStockRequest {
                    sku: sku.clone(),
                    on_hand: stock,
                    buckets: 1,
                })
                .await
                .map_err(|e| anyhow::anyhow!("SetStock {sku}: {e}"))?;
            Ok(())
        }
    })
    .await?;
    let customers: Vec<String> = (0..n).map(|c| format!("{run_id}-cust-{c}")).collect();
    // Faults may already be injected while the carts fill (chaos): AddItem is retried, and
    // before each retry the cart is read, so a unit whose answer was lost is not added twice.
    let retries = args.run.retries;
    for_each_concurrent(customers.iter().enumerate(), 32, |(c, customer)| {
        let (mesh, skus, cart_skus) = (&mesh, &skus, &cart_skus);
        async move {
            for s in cart_skus(c as u64) {
                let reply = add_one(mesh, c as u64, customer, &skus[s], retries).await?;
                anyhow::ensure!(
                    reply.outcome == ItemOutcome::Applied as i32,
                    "AddItem {customer} {} was refused",
                    skus[s]
                );
            }
            Ok(())
        }
    })
    .await?;

    // The storm.
    let told: Arc<Vec<OnceLock<Told>>> = Arc::new((0..n).map(|_| OnceLock::new()).collect());
    let plan = args.run.plan("checkout-storm", Some(n), None, 1_000.0);
    let (timeout, retries, drop_deadline) = (args.run.timeout, args.run.retries, args.drop_deadline);
    args.run.began("checkout-storm");
    let result = {
        let (mesh, told, run_id) = (mesh.clone(), told.clone(), run_id.clone());
        let (cards, dropped) = (Arc::new(cards.clone()), Arc::new(dropped.clone()));
        engine::run(&plan, move |i| {
            let (mesh, told, run_id, cards, dropped) = (
                mesh.clone(),
                told.clone(),
                run_id.clone(),
                cards.clone(),
                dropped.clone(),
            );
            async move {
                let customer = format!("{run_id}-cust-{i}");
                let message = CheckoutRequest {
                    idempotency_key: format!("{run_id}-key-{i}"),
                    customer_id: customer.clone(),
                    source: Some(Source::Cart(CartOwner {
                        owner: Some(Owner::CustomerId(customer.clone())),
                    })),
                    shipping_address: Some(crate::scenario::address(&customer)),
                    payment_method: CARDS[cards[i as usize]].into(),
                    ..Default::default()
                };
                let mut first = None;
                if dropped[i as usize] {
                    // Lose the first answer: cut the deadline short (even customers) or
                    // ignore what came back (odd ones).
                    let deadline = if splitmix(i).is_multiple_of(2) {
                        drop_deadline
                    } else {
                        timeout
                    };
                    if let Ok(reply) = mesh.orders(i).checkout(request(message.clone(), deadline)).await {
                        first = Some(CheckoutAnswer::of(reply.get_ref()));
                    }
                }
                let (result, _) = with_retries(retries, |_| {
                    let (mut client, message) = (mesh.orders(i), message.clone());
                    async move { client.checkout(request(message, timeout)).await }
                })
                .await;
                let (sample, answer) = match result {
                    Ok(reply) => {
                        let answer = CheckoutAnswer::of(reply.get_ref());
                        (Sample::answer("Checkout", answer.label()), answer)
                    }
                    Err(status) => (
                        Sample::error("Checkout", &status),
                        CheckoutAnswer::Unknown(format!(
                            "{} {}",
                            engine::code_name(status.code()),
                            status.message()
                        )),
                    ),
                };
                let _ = told[i as usize].set(Told { answer, first });
                sample
            }
        })
        .await
    };

    // Read back.
    let settle_started = Instant::now();
    let deadline = Instant::now() + args.run.settle_timeout;
    let told: Vec<Told> = told
        .iter()
        .map(|t| {
            t.get().cloned().unwrap_or(Told {
                answer: CheckoutAnswer::Unknown("never ran".into()),
                first: None,
            })
        })
        .collect();
    let mut checks = Vec::new();
    let unresolved: Vec<String> = told
        .iter()
        .enumerate()
        .filter_map(|(c, t)| match &t.answer {
            CheckoutAnswer::Unknown(e) => Some(format!("{}: {e}", customers[c])),
            _ => None,
        })
        .collect();
    checks.push(Check::new(
        "every-checkout-answered",
        "every checkout got an answer within its retries",
        unresolved.is_empty(),
        if unresolved.is_empty() {
            format!("{n} answers")
        } else {
            format!(
                "{} without an answer: {}",
                unresolved.len(),
                sample_list(&unresolved, 3)
            )
        },
    ));
    let mut wrong_outcome = Vec::new();
    for (c, t) in told.iter().enumerate() {
        let card = CARDS[cards[c]];
        let fine = match (&t.answer, card) {
            (CheckoutAnswer::Unknown(_), _) => true, // counted above
            (CheckoutAnswer::Declined, "pm_card_declined") => true,
            (
                CheckoutAnswer::Placed(_) | CheckoutAnswer::ManualReview(_),
                "pm_card_visa" | "pm_card_flaky",
            ) => true,
            _ => false,
        };
        if !fine {
            wrong_outcome.push(format!("{} paying {card} got {}", customers[c], t.answer.label()));
        }
    }
    checks.push(Check::new(
        "outcomes-match-cards",
        "pm_card_declined is declined; pm_card_visa and pm_card_flaky (after its retry) are placed",
        wrong_outcome.is_empty(),
        if wrong_outcome.is_empty() {
            let count = |label: &str| told.iter().filter(|t| t.answer.label() == label).count();
            format!(
                "{} placed, {} declined, {} held for review",
                count("placed"),
                count("payment_declined"),
                count("manual_review")
            )
        } else {
            format!(
                "{} unexpected: {}",
                wrong_outcome.len(),
                sample_list(&wrong_outcome, 3)
            )
        },
    ));
    let replays: Vec<&Told> = told.iter().filter(|t| t.first.is_some()).collect();
    let diverged: Vec<String> = replays
        .iter()
        .filter(|t| t.first.as_ref() != Some(&t.answer) && !matches!(t.answer, CheckoutAnswer::Unknown(_)))
        .map(|t| format!("first {:?}, replay {:?}", t.first, t.answer))
        .collect();
    let dropped_count = dropped.iter().filter(|d| **d).count();
    checks.push(Check::new(
        "idempotent-replays",
        "a retry with the same key answers the first answer",
        diverged.is_empty(),
        format!(
            "{dropped_count} first answers dropped ({} arrived and were ignored, the rest cut short); {} replays differed{}",
            replays.len(),
            diverged.len(),
            if diverged.is_empty() { String::new() } else { format!(": {}", sample_list(&diverged, 3)) }
        ),
    ));

    let attempted: Vec<Attempted> = told
        .iter()
        .enumerate()
        .map(|(c, t)| Attempted {
            customer: customers[c].clone(),
            key: format!("{run_id}-key-{c}"),
            answer: t.answer.clone(),
            cancelled: false,
        })
        .collect();
    let audit = audit::audit_checkouts(&mesh, &attempted, &run_id, started_ms, deadline).await?;
    let (levels, gone) = audit::wait_no_holds(&mesh, &skus, deadline).await?;
    let unbalanced: Vec<String> = levels
        .iter()
        .filter(|l| {
            let live = audit.live_units.get(&l.sku).copied().unwrap_or(0);
            l.on_hand + l.sold != stock || l.sold != live
        })
        .map(|l| {
            format!(
                "{} on_hand {} + sold {} vs {stock}, live order units {}",
                l.sku,
                l.on_hand,
                l.sold,
                audit.live_units.get(&l.sku).copied().unwrap_or(0)
            )
        })
        .collect();
    checks.push(Check::new(
        "conservation",
        "per SKU: on_hand + sold = stock set, and sold = units in live orders",
        unbalanced.is_empty(),
        if unbalanced.is_empty() {
            format!(
                "{} SKUs balance; {} units sold",
                levels.len(),
                levels.iter().map(|l| l.sold).sum::<i64>()
            )
        } else {
            format!(
                "{} SKUs do not: {}",
                unbalanced.len(),
                sample_list(&unbalanced, 3)
            )
        },
    ));
    checks.push(audit::live_holds_check(&levels, gone, settle_started.elapsed()));

    // Carts: cleared when placed, kept when declined.
    let cart_trouble = Mutex::new(Vec::new());
    for_each_concurrent(told.iter().enumerate(), 32, |(c, t)| {
        let (mesh, customers, cart_trouble) = (&mesh, &customers, &cart_trouble);
        async move {
            let expect_empty = match t.answer {
                CheckoutAnswer::Placed(_) => true,
                CheckoutAnswer::Declined => false,
                _ => return Ok(()),
            };
            let lines = mesh
                .cart(c as u64)
                .get_cart(GetCartRequest {
                    owner: owner(&customers[c]),
                })
                .await
                .map_err(|e| anyhow::anyhow!("GetCart: {e}"))?
                .into_inner()
                .cart
                .map_or(0, |cart| cart.lines.len());
            if expect_empty != (lines == 0) {
                cart_trouble.lock().expect("lock").push(format!(
                    "{} ({}) has {lines} lines",
                    customers[c],
                    t.answer.label()
                ));
            }
            Ok(())
        }
    })
    .await?;
    let cart_trouble = cart_trouble.into_inner().expect("lock");
    checks.push(Check::new(
        "carts-cleared",
        "a placed checkout empties its cart; a declined one keeps it",
        cart_trouble.is_empty(),
        if cart_trouble.is_empty() {
            "every cart as expected".to_string()
        } else {
            format!(
                "{} carts not: {}",
                cart_trouble.len(),
                sample_list(&cart_trouble, 3)
            )
        },
    ));
    checks.extend(audit.checks);

    let report = RunReport::new(
        "checkout-storm",
        run_id,
        mesh.endpoint.clone(),
        args.run.target.local,
        started_ms,
        serde_json::json!({
            "customers": n,
            "products": args.products,
            "lines": args.lines,
            "stock_per_product": stock,
            "dropped_first_answers": dropped_count,
            "declined_cards": n_declined,
            "flaky_cards": n_flaky,
            "drop_deadline_ms": args.drop_deadline.as_millis() as u64,
            "orders": audit.orders,
            "captures": audit.captures,
        }),
        &result,
        checks,
        &args.run.slos,
        settle_started.elapsed().as_secs_f64(),
    );
    Ok(report)
}

/// Adds one unit of `sku` to `customer`'s cart, retrying what a fault interrupted; a retry
/// first reads the cart and answers APPLIED if the line is there (the lost answer applied).
async fn add_one(
    mesh: &Mesh,
    c: u64,
    customer: &str,
    sku: &str,
    retries: u32,
) -> anyhow::Result<holdfast_proto::cart::v1::AddItemResponse> {
    let mut attempt = 0;
    loop {
        let added = mesh
            .cart(c)
            .add_item(AddItemRequest {
                owner: owner(customer),
                sku: sku.to_string(),
                quantity: 1,
                expected_version: 0,
            })
            .await;
        let status = match added {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) if retryable(&status) && attempt < retries => status,
            Err(status) => anyhow::bail!("AddItem {customer}: {status}"),
        };
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(25u64 << attempt.min(5)).min(Duration::from_secs(1))).await;
        let (cart, _) = with_retries(retries, |_| {
            let mut client = mesh.cart(c);
            let request = GetCartRequest {
                owner: owner(customer),
            };
            async move { client.get_cart(request).await }
        })
        .await;
        let cart =
            cart.map_err(|e| anyhow::anyhow!("GetCart {customer} after AddItem failed ({status}): {e}"))?;
        if cart
            .into_inner()
            .cart
            .is_some_and(|cart| cart.lines.iter().any(|l| l.sku == sku))
        {
            return Ok(holdfast_proto::cart::v1::AddItemResponse {
                outcome: ItemOutcome::Applied as i32,
                ..Default::default()
            });
        }
    }
}
