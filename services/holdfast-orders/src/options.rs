//! The service's timings, limits, risk thresholds and the fault hook.

use std::time::Duration;

/// Timings, limits and the fault hook.
#[derive(Debug, Clone)]
pub struct OrdersOptions {
    /// TTL of the stock hold, set at reserve and again before authorizing when what is left
    /// of it may not cover the payment ([`Self::hold_covers`]).
    pub hold_ttl: Duration,
    /// Deadline of every call to catalog, inventory and cart.
    pub upstream_timeout: Duration,
    /// Deadline of every money movement at the PSP.
    pub payment_timeout: Duration,
    /// Tries of an authorization the PSP answers UNAVAILABLE before the saga waits.
    pub payment_attempts: u32,
    /// How long a worker owns a saga after its last transition.
    pub saga_lease: Duration,
    /// How soon a saga whose step failed transiently is retried.
    pub retry_after: Duration,
    /// A checkout stuck before the pivot this long is compensated, not resumed.
    pub abandon_after: Duration,
    /// How often the recovery worker looks for stalled sagas.
    pub recovery_interval: Duration,
    /// How long a request waits for a saga another process runs.
    pub wait_for_running: Duration,
    /// A cancel or return saga still failing this long after it started is parked for
    /// review (step `parked:<step>`) instead of being retried again.
    pub park_after: Duration,
    /// How long after a checkout ended without an order the void sweep first looks its
    /// authorize key up at the PSP (an authorization still in flight lands meanwhile).
    pub void_sweep_grace: Duration,
    /// How often the void sweep looks again, until `void_sweep_window` has passed.
    pub void_sweep_every: Duration,
    /// How long after the checkout ended the void sweep keeps looking.
    pub void_sweep_window: Duration,
    /// How often the follow-up of a cart clear a placed checkout could not do at once tries
    /// again ([`crate::saga::cart_clear`]).
    pub cart_clear_every: Duration,
    /// How long after the checkout that follow-up keeps trying.
    pub cart_clear_window: Duration,
    /// Risk thresholds.
    pub risk: RiskRules,
    /// Fault hook, off unless set: abort the process right after this step was persisted
    /// ("<step>" of a checkout, or "<kind>:<step>"). `HOLDFAST_FAULT_CRASH_AFTER`.
    pub crash_after: Option<String>,
}

impl Default for OrdersOptions {
    fn default() -> Self {
        Self {
            hold_ttl: Duration::from_secs(120),
            upstream_timeout: Duration::from_secs(2),
            payment_timeout: Duration::from_secs(3),
            payment_attempts: 3,
            saga_lease: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            abandon_after: Duration::from_secs(600),
            recovery_interval: Duration::from_secs(1),
            wait_for_running: Duration::from_secs(10),
            park_after: Duration::from_secs(24 * 3600),
            void_sweep_grace: Duration::from_secs(300),
            void_sweep_every: Duration::from_secs(3600),
            void_sweep_window: Duration::from_secs(24 * 3600),
            cart_clear_every: Duration::from_secs(1),
            cart_clear_window: Duration::from_secs(600),
            risk: RiskRules::default(),
            crash_after: None,
        }
    }
}

impl OrdersOptions {
    /// Defaults with the fault hook read from `HOLDFAST_FAULT_CRASH_AFTER`.
    pub fn from_env() -> Self {
        Self {
            crash_after: std::env::var("HOLDFAST_FAULT_CRASH_AFTER")
                .ok()
                .filter(|v| !v.is_empty()),
            ..Self::default()
        }
    }

    /// The saga lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.saga_lease.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// `duration` in milliseconds, saturating.
    pub fn ms(duration: Duration) -> i64 {
        i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// The hold TTL in whole seconds (at least one).
    pub fn hold_ttl_seconds(&self) -> u32 {
        u32::try_from(self.hold_ttl.as_secs().max(1)).unwrap_or(u32::MAX)
    }

    /// Whether the hold a checkout's Reserve set (with [`Self::hold_ttl_seconds`]) still lasts
    /// through the authorization and the commit when the checkout started `since_start_ms`
    /// ago (the Reserve ran after the start, so its hold is younger). Then the Extend before
    /// authorizing adds nothing the checkout needs, and is skipped. What the hold must
    /// outlast: every payment attempt's deadline and backoff, and two upstream deadlines (the
    /// commit's, and a margin for the clocks of the processes that may run the saga). A
    /// negative time (the clocks disagree) is not trusted.
    pub fn hold_covers(&self, since_start_ms: i64) -> bool {
        let attempt = Self::ms(self.payment_timeout).saturating_add(Self::ms(self.retry_after));
        let need = attempt
            .saturating_mul(i64::from(self.payment_attempts))
            .saturating_add(Self::ms(self.upstream_timeout).saturating_mul(2));
        let ttl = i64::from(self.hold_ttl_seconds()).saturating_mul(1000);
        (0..=ttl.saturating_sub(need)).contains(&since_start_ms)
    }
}

/// The risk thresholds. An order is held for review when its total exceeds
/// `max_amount_minor` or the customer already placed `max_orders_per_window` orders within
/// `window`.
#[derive(Debug, Clone)]
pub struct RiskRules {
    /// Largest total charged without review, in minor units of the order's currency.
    pub max_amount_minor: i64,
    /// Most orders per customer within `window` before review.
    pub max_orders_per_window: u32,
    /// The velocity window.
    pub window: Duration,
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            max_amount_minor: 1_000_000,
            max_orders_per_window: 50,
            window: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_hold_covers_the_payment_and_the_commit_and_an_old_or_short_one_does_not() {
        let options = OrdersOptions::default();
        // 120 s of hold; 3 attempts of (3 s deadline + 1 s backoff) and 2 × 2 s: 16 s needed.
        assert!(options.hold_covers(0));
        assert!(options.hold_covers(104_000));
        assert!(!options.hold_covers(104_001));
        assert!(!options.hold_covers(-1), "clocks that disagree are not trusted");
        let short = OrdersOptions {
            hold_ttl: Duration::from_secs(10),
            ..OrdersOptions::default()
        };
        assert!(
            !short.hold_covers(0),
            "a 10 s hold cannot cover 16 s of payment and commit"
        );
    }
}
