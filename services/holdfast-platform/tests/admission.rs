//! The admission limiter against a real redis-server and a real 3-node Redis Cluster: a
//! burst at 10x a SKU's rate is mostly refused with a retry delay, limits change at
//! runtime for every limiter sharing Redis, and per-customer limits hold.

use std::time::{Duration, Instant};

use holdfast_platform::admission::{self, Decision, Defaults, Limiter, Operation, RateLimit, SkuLimits};
use holdfast_platform::redis;
use holdfast_testkit::{RedisCluster, RedisServer};

fn defaults(per_sku: f64, per_customer: f64) -> Defaults {
    Defaults {
        per_sku: RateLimit {
            per_second: per_sku,
            burst: 1,
        },
        per_customer: RateLimit {
            per_second: per_customer,
            burst: 1,
        },
    }
}

async fn limiter(url: &holdfast_platform::RedisUrl, op: Operation, defaults: Defaults) -> Limiter {
    let pool = redis::connect(url, 2).await.expect("redis connects");
    let limiter = Limiter::new(pool, op, defaults);
    limiter.load_scripts().await.expect("scripts load");
    limiter
}

/// Fires `calls` decisions for `sku` back to back and counts the admitted ones; every
/// refusal must carry a delay of at most one second (the rate is at least 1/s).
async fn burst(limiter: &Limiter, sku: &str, customer: Option<&str>, calls: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..calls {
        let decision = limiter.admit(&[sku], customer).await;
        match decision.retry_after {
            None => admitted += 1,
            Some(delay) => assert!(
                delay > Duration::ZERO && delay <= Duration::from_secs(1),
                "retry delay {delay:?}"
            ),
        }
    }
    admitted
}

#[tokio::test]
async fn admission_burst_at_ten_times_the_rate_is_mostly_refused() {
    let redis = RedisServer::start().expect("redis starts");
    // 20 calls/s per SKU, burst 1; 200 calls as fast as one connection allows.
    let limiter = limiter(&redis.url(), Operation::Checkout, defaults(20.0, 0.0)).await;
    let started = Instant::now();
    let admitted = burst(&limiter, "FLASH-1", None, 200).await;
    let elapsed = started.elapsed().as_secs_f64();
    // GCRA admits at most 1 + rate * elapsed calls (burst 1).
    let ceiling = 1 + (20.0 * elapsed).ceil() as usize;
    assert!(admitted >= 1, "the first call is admitted");
    assert!(
        admitted <= ceiling,
        "{admitted} admitted in {elapsed:.3}s at 20/s (ceiling {ceiling})"
    );
    // Another SKU has a budget of its own.
    assert_eq!(limiter.admit(&["OTHER"], None).await.retry_after, None);
}

#[tokio::test]
async fn admission_runtime_limits_reach_every_replica() {
    let redis = RedisServer::start().expect("redis starts");
    // Two "replicas": two limiters on separate pools over one Redis.
    let a = limiter(&redis.url(), Operation::Checkout, defaults(0.0, 0.0)).await;
    let b = limiter(&redis.url(), Operation::Checkout, defaults(0.0, 0.0)).await;
    assert_eq!(burst(&a, "S1", None, 20).await, 20, "unlimited by default");

    let pool = redis::connect(&redis.url(), 1).await.expect("redis connects");
    let limits = SkuLimits {
        checkout: Some(RateLimit {
            per_second: 1.0,
            burst: 3,
        }),
        reserve: None,
        drop: true,
    };
    admission::set_sku_limits(&pool, "S1", &limits)
        .await
        .expect("limits stored");
    assert_eq!(admission::sku_limits(&pool, "S1").await.expect("read"), limits);

    // The budget of 3 is shared by both replicas.
    let first = a.admit(&["S1"], None).await;
    assert!(first.drop, "the drop flag is reported");
    assert_eq!(first.retry_after, None);
    assert_eq!(b.admit(&["S1"], None).await.retry_after, None);
    assert_eq!(a.admit(&["S1"], None).await.retry_after, None);
    let refused: Decision = b.admit(&["S1"], None).await;
    let delay = refused.retry_after.expect("the fourth call is refused");
    assert!(delay <= Duration::from_secs(1), "{delay:?}");

    // Lifting the limit takes effect at the next call.
    admission::set_sku_limits(&pool, "S1", &SkuLimits::default())
        .await
        .expect("limits cleared");
    assert_eq!(burst(&b, "S1", None, 20).await, 20);
    assert_eq!(
        admission::sku_limits(&pool, "S1").await.expect("read"),
        SkuLimits::default()
    );
}

#[tokio::test]
async fn admission_per_customer_limit_holds_across_skus() {
    let redis = RedisServer::start().expect("redis starts");
    let limiter = limiter(&redis.url(), Operation::Checkout, defaults(0.0, 1.0)).await;
    assert_eq!(limiter.admit(&["A"], Some("c1")).await.retry_after, None);
    // Same customer, another SKU: still refused, the customer's budget is spent.
    assert!(limiter.admit(&["B"], Some("c1")).await.retry_after.is_some());
    // Another customer is not affected.
    assert_eq!(limiter.admit(&["A"], Some("c2")).await.retry_after, None);
}

#[tokio::test]
async fn on_standalone_redis_a_call_refused_by_one_sku_costs_the_other_skus_nothing() {
    let redis = RedisServer::start().expect("redis starts");
    // One checkout a ~15 minutes per SKU: nothing refills during the test.
    let limiter = limiter(&redis.url(), Operation::Checkout, defaults(0.001, 0.0)).await;
    let pool = redis::connect(&redis.url(), 1).await.expect("redis connects");
    let two = SkuLimits {
        checkout: Some(RateLimit {
            per_second: 0.001,
            burst: 2,
        }),
        ..SkuLimits::default()
    };
    admission::set_sku_limits(&pool, "A", &two)
        .await
        .expect("limits stored");

    assert_eq!(
        limiter.admit(&["A", "B"], None).await.retry_after,
        None,
        "both have room"
    );
    let refused = limiter.admit(&["A", "B"], None).await;
    assert!(refused.retry_after.is_some(), "B's one unit is spent");
    assert_eq!(refused.limited_by.as_deref(), Some("sku:B"));
    // A admitted that call too, but the call was refused: A was not charged for it.
    assert_eq!(
        limiter.admit(&["A"], None).await.retry_after,
        None,
        "A's second unit is still there"
    );
    let spent = limiter.admit(&["A"], None).await;
    assert_eq!(spent.limited_by.as_deref(), Some("sku:A"), "and now it is spent");
}

#[tokio::test]
async fn admission_works_on_redis_cluster() {
    let cluster = RedisCluster::start().expect("cluster starts");
    let limiter = limiter(&cluster.url(), Operation::Reserve, defaults(5.0, 0.0)).await;
    // SKUs spread over the slots; each keeps its own budget on its own node.
    for sku in ["alpha", "beta", "gamma", "delta", "epsilon"] {
        let started = Instant::now();
        let admitted = burst(&limiter, sku, None, 30).await;
        let ceiling = 1 + (5.0 * started.elapsed().as_secs_f64()).ceil() as usize;
        assert!(
            (1..=ceiling).contains(&admitted),
            "{sku}: {admitted} admitted (ceiling {ceiling})"
        );
    }
}

#[tokio::test]
async fn admission_reloads_its_script_after_a_redis_restart() {
    let mut redis = RedisServer::start().expect("redis starts");
    let port = redis.port();
    let limiter = limiter(&redis.url(), Operation::Checkout, defaults(1.0, 0.0)).await;
    assert_eq!(limiter.admit(&["S"], None).await.retry_after, None);
    assert!(limiter.admit(&["S"], None).await.retry_after.is_some());
    // A restarted (empty of scripts) Redis: the script is reloaded on NOSCRIPT.
    redis.restart().expect("redis restarts");
    assert_eq!(redis.port(), port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if limiter.take(admission::Subject::Sku("fresh")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the limiter never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn calls_decided_together_admit_the_first_up_to_the_burst_and_share_the_budget() {
    let redis = RedisServer::start().expect("redis starts");
    // 1 call/s per SKU, burst 3: an idle SKU admits 3 at once.
    let limited = Defaults {
        per_sku: RateLimit {
            per_second: 1.0,
            burst: 3,
        },
        per_customer: RateLimit::UNLIMITED,
    };
    let hot = limiter(&redis.url(), Operation::Reserve, limited).await;
    let answers = hot.admit_many("HOT", 5).await;
    assert_eq!(&answers[..3], &[None, None, None], "the first three: {answers:?}");
    for delay in &answers[3..] {
        let delay = delay.expect("the last two are refused");
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(1),
            "{delay:?}"
        );
    }
    // The budget they used is the one single calls use: the next single call is refused too.
    assert!(hot.admit(&["HOT"], None).await.retry_after.is_some());
    // Another SKU has its own; an unlimited limiter admits every call of a group.
    assert_eq!(hot.admit_many("COLD", 2).await, vec![None, None]);
    let open = limiter(&redis.url(), Operation::Reserve, defaults(0.0, 0.0)).await;
    assert_eq!(open.admit_many("HOT", 64).await, vec![None; 64]);
}
