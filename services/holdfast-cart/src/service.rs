//! The gRPC face of carts: validate, read the cart with the prices and stock of its SKUs
//! (one script where Redis has them, the catalog and inventory over gRPC for the rest), run
//! one changing script, mark the cart for its durable write, answer the cart re-priced.
//!
//! Redis round trips on a standalone Redis with warm caches: GetCart 1 (`cart_view.lua`);
//! AddItem, UpdateItem and RemoveItem 2 (`cart_view.lua`, then the changing script); ClearCart
//! one. A cart missing from Redis adds a store read and `cart_restore.lua`; a catalog cache
//! miss or a SKU inventory does not keep in this Redis adds a gRPC call for those SKUs. On a
//! Redis Cluster the read is the cart alone and every price and stock figure comes over gRPC.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fred::prelude::{ClientLike, Pool};
use holdfast_platform::auth::{self, Caller};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::cart::v1 as pb;
use holdfast_proto::cart::v1::cart_service_server::CartService;
use holdfast_store::CartStore;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::CartOptions;
use crate::error::{self, CartError};
use crate::live::{LiveCart, Owner};
use crate::lookup::{Known, Upstream};
use crate::scripts::{self, Absent, Addition, Change, Limits, Restore};
use crate::validate;
use crate::view::render;
use crate::write_behind::WriteBehind;

pub use crate::lookup::{CatalogClient, InventoryClient};

/// `holdfast.cart.v1.CartService` over Redis, the durable store, the catalog and inventory.
#[derive(Clone)]
pub struct Cart<S: CartStore + Clone + 'static> {
    redis: Pool,
    store: S,
    upstream: Upstream,
    write_behind: Arc<WriteBehind>,
    options: CartOptions,
    redis_calls: Arc<AtomicU64>,
}

fn checked(violations: FieldViolations) -> Result<(), CartError> {
    violations.into_result().map_err(CartError::InvalidArgument)
}

impl<S: CartStore + Clone + 'static> Cart<S> {
    /// The service. `catalog` and `inventory` are channels to those services (lazy ones are
    /// fine); every call on them carries the caller's trace and a deadline.
    pub fn new(
        redis: Pool,
        store: S,
        catalog: Channel,
        inventory: Channel,
        write_behind: Arc<WriteBehind>,
        options: CartOptions,
    ) -> Self {
        Self {
            redis,
            store,
            upstream: Upstream::new(catalog, inventory, &options.outbound, options.upstream_timeout),
            write_behind,
            options,
            redis_calls: Arc::default(),
        }
    }

    /// Redis requests (script calls) the handlers of this service made so far: what the
    /// round-trip budget in `docs/cart.md` is checked against.
    pub fn redis_calls(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.redis_calls)
    }

    /// Counts one Redis request.
    fn trip(&self) {
        self.redis_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn limits(&self) -> Limits {
        Limits {
            max_lines: self.options.max_lines.max(1),
            max_quantity: self.options.max_quantity.max(1),
            ttl_ms: i64::try_from(self.options.ttl.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// Whether `cart_view.lua` may read the catalog's cache and inventory's buckets: they are
    /// in this Redis, and it is not a cluster (where the script may touch its cart's slot only).
    fn direct_reads(&self) -> bool {
        self.options.shared_redis && !self.redis.next().is_clustered()
    }

    /// One `cart_view.lua` call.
    async fn viewed(&self, owner: &Owner, extra: &[&str]) -> Result<scripts::Viewed, CartError> {
        self.trip();
        scripts::view(self.redis.next(), &owner.redis_key(), self.direct_reads(), extra).await
    }

    /// The live cart with what Redis knows of the prices and stock of its SKUs and of
    /// `extra`, in one read. A cart missing from Redis is re-warmed from the store first and
    /// read again; an owner who never had one gets the empty cart at version 0.
    async fn snapshot(&self, owner: &Owner, extra: &[&str]) -> Result<(LiveCart, Known), CartError> {
        let viewed = self.viewed(owner, extra).await?;
        if let Some(cart) = viewed.cart {
            return Ok((cart, Known::from_found(viewed.found)));
        }
        let Some(warmed) = self.warm(owner).await? else {
            return Ok((LiveCart::default(), Known::from_found(viewed.found)));
        };
        if warmed.lines.is_empty() || !self.direct_reads() {
            return Ok((warmed, Known::from_found(viewed.found)));
        }
        let again = self.viewed(owner, extra).await?;
        Ok((again.cart.unwrap_or(warmed), Known::from_found(again.found)))
    }

    /// Re-warms `owner`'s cart from its durable copy; `None` when the store has none.
    async fn warm(&self, owner: &Owner) -> Result<Option<LiveCart>, CartError> {
        let Some(stored) = self.store.load_cart(&owner.key()).await? else {
            return Ok(None);
        };
        self.trip();
        let (outcome, live) = scripts::restore(
            self.redis.next(),
            &owner.redis_key(),
            &stored,
            self.limits().ttl_ms,
        )
        .await?;
        if outcome == Restore::Expired {
            tracing::debug!(owner = %owner.key(), "durable cart outlived its ttl; restored empty");
        }
        Ok(Some(live))
    }

    /// Runs a changing script; if the key is cold, re-warms it from the store and runs the
    /// script again, so a cart lost from Redis is changed, not replaced by a fresh one.
    async fn change<T, F, Fut>(&self, owner: &Owner, run: F) -> Result<T, CartError>
    where
        F: Fn(Absent) -> Fut,
        Fut: Future<Output = Result<Option<T>, CartError>>,
    {
        self.trip();
        if let Some(done) = run(Absent::AskStore).await? {
            return Ok(done);
        }
        self.warm(owner).await?;
        self.trip();
        run(Absent::NoCart).await?.ok_or_else(|| CartError::Protocol {
            what: "cart script",
            detail: "answered cold although the store was consulted".into(),
        })
    }

    /// The cart as the API shows it, priced and stock-checked from `known`, asking the
    /// catalog and inventory for what it lacks.
    async fn view(&self, owner: &Owner, live: &LiveCart, known: &mut Known) -> Result<pb::Cart, CartError> {
        let ttl_ms = self.limits().ttl_ms;
        if live.lines.is_empty() {
            return Ok(render(owner, live, None, ttl_ms));
        }
        known.complete(&self.upstream, &live.skus()).await?;
        Ok(render(owner, live, Some(&known.lookup), ttl_ms))
    }

    /// The cart after a change that has been applied, priced from the read that preceded
    /// the change (the same freshness the call had before it changed anything). Failing the
    /// call now would invite a retry that applies the change twice, so if the catalog or
    /// inventory cannot be asked for what that read lacked, the cart is answered at its
    /// snapshot prices, without current prices or flags.
    async fn view_after_change(&self, owner: &Owner, live: &LiveCart, known: &mut Known) -> pb::Cart {
        match self.view(owner, live, known).await {
            Ok(cart) => cart,
            Err(error) => {
                tracing::warn!(%error, owner = %owner.key(), "cart changed but not re-priced");
                render(owner, live, None, self.limits().ttl_ms)
            }
        }
    }

    /// The error for a script's refusal.
    fn refused(&self, owner: &Owner, sku: &str, expected: u64, change: Change) -> CartError {
        let limits = self.limits();
        match change {
            Change::VersionConflict { actual } => CartError::VersionConflict {
                owner: owner.key(),
                expected,
                actual,
            },
            Change::LineCap => CartError::precondition(
                error::LINE_LIMIT,
                owner.key(),
                format!(
                    "cart already holds {} lines, the most it may; remove one first",
                    limits.max_lines
                ),
            ),
            Change::QuantityCap { line_quantity } => CartError::precondition(
                error::QUANTITY_LIMIT,
                sku,
                format!(
                    "line {sku:?} holds {line_quantity} units and may hold at most {}",
                    limits.max_quantity
                ),
            ),
            Change::Missing => CartError::LineNotFound { sku: sku.to_string() },
            Change::StockUnknown => CartError::Unavailable {
                dependency: "inventory",
                detail: "no stock figure to check a raise against".into(),
            },
            Change::Done(_) | Change::OutOfStock { .. } => CartError::Protocol {
                what: "cart script",
                detail: "a success taken for a refusal".into(),
            },
        }
    }
}

#[tonic::async_trait]
impl<S: CartStore + Clone + 'static> CartService for Cart<S> {
    async fn get_cart(
        &self,
        request: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::GetCartResponse>, Status> {
        let (caller, request) = auth::split(request);
        auth::check_cart_owner(caller.as_ref(), request.owner.as_ref())?;
        let mut violations = FieldViolations::new();
        let owner = validate::owner(&mut violations, "owner", request.owner.as_ref());
        checked(violations)?;
        let (live, mut known) = self.snapshot(&owner, &[]).await?;
        Ok(Response::new(pb::GetCartResponse {
            cart: Some(self.view(&owner, &live, &mut known).await?),
        }))
    }

    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        let (caller, request) = auth::split(request);
        auth::check_cart_owner(caller.as_ref(), request.owner.as_ref())?;
        let mut violations = FieldViolations::new();
        let owner = validate::owner(&mut violations, "owner", request.owner.as_ref());
        validate::sku(&mut violations, "sku", &request.sku);
        validate::quantity(
            &mut violations,
            "quantity",
            request.quantity,
            1,
            self.options.max_quantity,
        );
        validate::expected_version(&mut violations, "expected_version", request.expected_version);
        checked(violations)?;

        let sku = request.sku.as_str();
        let (_, mut known) = self.snapshot(&owner, &[sku]).await?;
        known
            .complete(&self.upstream, std::slice::from_ref(&request.sku))
            .await?;
        let reason = || format!("unknown or inactive sku {sku:?}");
        let price = match known.product(sku) {
            Some(product) if product.active && product.price.is_some() => {
                product.price.clone().unwrap_or_default()
            }
            Some(_) => return Err(CartError::precondition(error::SKU_INACTIVE, sku, reason()).into()),
            None => return Err(CartError::precondition(error::SKU_UNKNOWN, sku, reason()).into()),
        };
        let available = known.available(sku).unwrap_or(0);
        let addition = Addition {
            sku,
            quantity: request.quantity,
            unit_price_minor: price.amount_minor,
            currency: &price.currency,
            available,
        };
        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let expected = request.expected_version;
        let change = self
            .change(&owner, |absent| {
                scripts::add(client, &key, absent, expected, addition, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::AddItemResponse {
                    outcome: pb::ItemOutcome::Applied as i32,
                    cart: Some(self.view_after_change(&owner, &live, &mut known).await),
                    available_quantity: 0,
                }))
            }
            Change::OutOfStock { cart, .. } => Ok(Response::new(pb::AddItemResponse {
                outcome: pb::ItemOutcome::OutOfStock as i32,
                cart: Some(self.view_after_change(&owner, &cart, &mut known).await),
                available_quantity: available,
            })),
            refusal => Err(self.refused(&owner, sku, expected, refusal).into()),
        }
    }

    async fn update_item(
        &self,
        request: Request<pb::UpdateItemRequest>,
    ) -> Result<Response<pb::UpdateItemResponse>, Status> {
        let (caller, request) = auth::split(request);
        auth::check_cart_owner(caller.as_ref(), request.owner.as_ref())?;
        let mut violations = FieldViolations::new();
        let owner = validate::owner(&mut violations, "owner", request.owner.as_ref());
        validate::sku(&mut violations, "sku", &request.sku);
        validate::quantity(
            &mut violations,
            "quantity",
            request.quantity,
            0,
            self.options.max_quantity,
        );
        validate::expected_version(&mut violations, "expected_version", request.expected_version);
        checked(violations)?;

        let sku = request.sku.as_str();
        // Only a raise needs the figure, and only the script knows whether this is one: a
        // failed inventory call fails the update only if it turns out to be a raise.
        let raise = request.quantity > 0;
        let extra: &[&str] = if raise { &[sku] } else { &[] };
        let (_, mut known) = self.snapshot(&owner, extra).await?;
        let (available, inventory_error) = if raise {
            match known
                .complete_available(&self.upstream, std::slice::from_ref(&request.sku))
                .await
            {
                Ok(()) => (known.available(sku), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let (expected, quantity) = (request.expected_version, request.quantity);
        let change = self
            .change(&owner, |absent| {
                scripts::set_quantity(client, &key, absent, expected, sku, quantity, available, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::UpdateItemResponse {
                    outcome: pb::ItemOutcome::Applied as i32,
                    cart: Some(self.view_after_change(&owner, &live, &mut known).await),
                    available_quantity: 0,
                }))
            }
            Change::OutOfStock { cart, .. } => Ok(Response::new(pb::UpdateItemResponse {
                outcome: pb::ItemOutcome::OutOfStock as i32,
                cart: Some(self.view_after_change(&owner, &cart, &mut known).await),
                available_quantity: available.unwrap_or(0),
            })),
            // The raise needed the figure the failed inventory call did not give: its error.
            refusal @ Change::StockUnknown => Err(inventory_error
                .unwrap_or_else(|| self.refused(&owner, sku, expected, refusal))
                .into()),
            refusal => Err(self.refused(&owner, sku, expected, refusal).into()),
        }
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        let (caller, request) = auth::split(request);
        auth::check_cart_owner(caller.as_ref(), request.owner.as_ref())?;
        let mut violations = FieldViolations::new();
        let owner = validate::owner(&mut violations, "owner", request.owner.as_ref());
        validate::sku(&mut violations, "sku", &request.sku);
        validate::expected_version(&mut violations, "expected_version", request.expected_version);
        checked(violations)?;

        let sku = request.sku.as_str();
        let (_, mut known) = self.snapshot(&owner, &[]).await?;
        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let expected = request.expected_version;
        let change = self
            .change(&owner, |absent| {
                scripts::remove(client, &key, absent, expected, sku, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::RemoveItemResponse {
                    cart: Some(self.view_after_change(&owner, &live, &mut known).await),
                }))
            }
            refusal => Err(self.refused(&owner, sku, expected, refusal).into()),
        }
    }

    async fn merge_carts(
        &self,
        request: Request<pb::MergeCartsRequest>,
    ) -> Result<Response<pb::MergeCartsResponse>, Status> {
        let (caller, request) = auth::split(request);
        Caller::check_customer(caller.as_ref(), &request.customer_id)?;
        Caller::check_session(caller.as_ref(), &request.session_id)?;
        let mut violations = FieldViolations::new();
        validate::id(&mut violations, "session_id", &request.session_id);
        validate::id(&mut violations, "customer_id", &request.customer_id);
        checked(violations)?;

        let session = Owner::Session(request.session_id.clone());
        let customer = Owner::Customer(request.customer_id.clone());
        let (anonymous, mut known) = self.snapshot(&session, &[]).await?;
        if anonymous.lines.is_empty() {
            // Never had a cart, or merged before: nothing to fold in, nothing changes.
            let (live, mut known) = self.snapshot(&customer, &[]).await?;
            return Ok(Response::new(pb::MergeCartsResponse {
                cart: Some(self.view_after_change(&customer, &live, &mut known).await),
                capped_skus: Vec::new(),
                dropped_skus: Vec::new(),
            }));
        }

        // Asked before anything is written: a catalog outage leaves both carts as they were.
        known.complete_products(&self.upstream, &anonymous.skus()).await?;
        let sellable = |sku: &str| known.product(sku).is_some_and(|product| product.active);
        let folded = LiveCart {
            lines: anonymous
                .lines
                .iter()
                .filter(|line| sellable(&line.sku))
                .cloned()
                .collect(),
            ..anonymous.clone()
        };
        let limits = self.limits();
        let (client, customer_key) = (self.redis.next(), customer.redis_key());
        let (live, capped, over_cap) = if folded.lines.is_empty() {
            (self.snapshot(&customer, &[]).await?.0, Vec::new(), Vec::new())
        } else {
            let merged = self
                .change(&customer, |absent| {
                    scripts::merge(
                        client,
                        &customer_key,
                        absent,
                        &request.session_id,
                        &folded,
                        limits,
                    )
                })
                .await?;
            (merged.cart, merged.capped, merged.dropped)
        };
        let dropped = anonymous
            .lines
            .iter()
            .filter(|line| !sellable(&line.sku) || over_cap.contains(&line.sku))
            .map(|line| line.sku.clone())
            .collect();

        // Emptied rather than deleted: its version must keep growing (the store ignores saves
        // not newer than what it holds), and the durable copy is emptied by the same write.
        // A crash before this line is safe: the retry finds the merge marker in the
        // customer's cart and only empties this one.
        let session_key = session.redis_key();
        let cleared = self
            .change(&session, |absent| {
                scripts::clear(client, &session_key, absent, 0, limits)
            })
            .await?;
        if let Change::Done(cleared) = cleared {
            self.write_behind.enqueue(session.key(), cleared);
        }
        self.write_behind.enqueue(customer.key(), live.clone());
        Ok(Response::new(pb::MergeCartsResponse {
            cart: Some(self.view_after_change(&customer, &live, &mut known).await),
            capped_skus: capped,
            dropped_skus: dropped,
        }))
    }

    async fn clear_cart(
        &self,
        request: Request<pb::ClearCartRequest>,
    ) -> Result<Response<pb::ClearCartResponse>, Status> {
        let (caller, request) = auth::split(request);
        auth::check_cart_owner(caller.as_ref(), request.owner.as_ref())?;
        let mut violations = FieldViolations::new();
        let owner = validate::owner(&mut violations, "owner", request.owner.as_ref());
        validate::expected_version(&mut violations, "expected_version", request.expected_version);
        checked(violations)?;

        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let expected = request.expected_version;
        let change = self
            .change(&owner, |absent| {
                scripts::clear(client, &key, absent, expected, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::ClearCartResponse {
                    cart: Some(render(&owner, &live, None, limits.ttl_ms)),
                }))
            }
            refusal => Err(self.refused(&owner, "", expected, refusal).into()),
        }
    }
}
