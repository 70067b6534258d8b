//! The gRPC face of carts: validate, ask the catalog and inventory, run one script, mark the
//! cart for its durable write, answer the cart re-priced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use fred::prelude::{HashesInterface, Pool};
use holdfast_platform::PeerChannel;
use holdfast_platform::auth::{self, Caller};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::cart::v1 as pb;
use holdfast_proto::cart::v1::cart_service_server::CartService;
use holdfast_store::CartStore;
use tonic::{Request, Response, Status};

use crate::CartOptions;
use crate::error::{self, CartError};
use crate::live::{LiveCart, Owner};
pub use crate::lookup::{CatalogClient, InventoryClient};
use crate::lookup::{Known, Upstream};
use crate::scripts::{self, Absent, AddViewed, Addition, Change, Limits, Restore};
use crate::validate;
use crate::view::{Priced, render};
use crate::write_behind::WriteBehind;

/// `holdfast.cart.v1.CartService` over Redis, the durable store, the catalog and inventory.
#[derive(Clone)]
pub struct Cart<S: CartStore + Clone + 'static> {
    redis: Pool,
    store: S,
    upstream: Upstream,
    write_behind: Arc<WriteBehind>,
    options: CartOptions,
}

fn checked(violations: FieldViolations) -> Result<(), CartError> {
    violations.into_result().map_err(CartError::InvalidArgument)
}

/// The product behind `sku` as `known` has it, refusing unknown and inactive ones (`known`
/// has asked the catalog about `sku`).
fn sellable(known: &Known, sku: &str) -> Result<Priced, CartError> {
    match known.lookup.products.get(sku) {
        Some(product) if product.active && product.price.is_some() => Ok(product.clone()),
        Some(_) => Err(not_sellable(error::SKU_INACTIVE, sku)),
        None => Err(not_sellable(error::SKU_UNKNOWN, sku)),
    }
}

/// The refusal of a SKU the catalog does not sell (`kind`: unknown or inactive).
fn not_sellable(kind: &'static str, sku: &str) -> CartError {
    CartError::precondition(kind, sku, format!("unknown or inactive sku {sku:?}"))
}

impl<S: CartStore + Clone + 'static> Cart<S> {
    /// The service. `catalog` and `inventory` are channels to those services (lazy ones are
    /// fine); every call on them carries the caller's trace and a deadline.
    pub fn new(
        redis: Pool,
        store: S,
        catalog: PeerChannel,
        inventory: PeerChannel,
        write_behind: Arc<WriteBehind>,
        options: CartOptions,
    ) -> Self {
        let upstream = Upstream::new(
            redis.clone(),
            catalog,
            inventory,
            options.outbound.clone(),
            options.upstream_timeout,
            options.view,
        );
        Self {
            redis,
            store,
            upstream,
            write_behind,
            options,
        }
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

    /// Re-warms `owner`'s cart from its durable copy; `None` when the store has none.
    async fn warm(&self, owner: &Owner) -> Result<Option<LiveCart>, CartError> {
        let Some(stored) = self.store.load_cart(&owner.key()).await? else {
            return Ok(None);
        };
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

    /// The live cart, re-warmed from the store on a Redis miss; empty at version 0 for an
    /// owner who never had one.
    async fn read(&self, owner: &Owner) -> Result<LiveCart, CartError> {
        let fields: HashMap<String, String> = self.redis.next().hgetall(owner.redis_key()).await?;
        let live = LiveCart::from_hash(fields).map_err(|detail| CartError::Protocol {
            what: "cart hash",
            detail,
        })?;
        match live {
            Some(live) => Ok(live),
            None => Ok(self.warm(owner).await?.unwrap_or_default()),
        }
    }

    /// What is known about the SKUs of `owner`'s cart and `extra`, read with the cart in one
    /// round trip on a standalone Redis (nothing is read on a cluster), and whether the cart's
    /// key was seen absent (it is re-warmed before it is changed, see [`Self::change`]).
    async fn peek(&self, owner: &Owner, extra: Option<&str>) -> Result<(bool, Known), CartError> {
        Ok(match self.upstream.peek(&owner.redis_key(), extra).await? {
            Some(peek) => (peek.cart.is_none(), peek.known),
            None => (false, Known::default()),
        })
    }

    /// Runs a changing script; if the key is cold, re-warms it from the store and runs the
    /// script again, so a cart lost from Redis is changed, not replaced by a fresh one.
    /// `cold`: the key was just seen absent, so the store is consulted first (one script
    /// call fewer; should the key appear meanwhile, the restore leaves it as it is).
    async fn change<T, F, Fut>(&self, owner: &Owner, cold: bool, run: F) -> Result<T, CartError>
    where
        F: Fn(Absent) -> Fut,
        Fut: Future<Output = Result<Option<T>, CartError>>,
    {
        if !cold && let Some(done) = run(Absent::AskStore).await? {
            return Ok(done);
        }
        Box::pin(self.warm(owner)).await?;
        run(Absent::NoCart).await?.ok_or_else(|| CartError::Protocol {
            what: "cart script",
            detail: "answered cold although the store was consulted".into(),
        })
    }

    /// The cart as the API shows it, re-priced and stock-checked with what `known` has (read
    /// with the cart, or just before a change) and the catalog and inventory for the rest.
    async fn view(&self, owner: &Owner, live: &LiveCart, known: &mut Known) -> Result<pb::Cart, CartError> {
        let ttl_ms = self.limits().ttl_ms;
        if live.lines.is_empty() {
            return Ok(render(owner, live, None, ttl_ms));
        }
        self.upstream.complete(known, &live.skus()).await?;
        Ok(render(owner, live, Some(&known.lookup), ttl_ms))
    }

    /// The cart after a change that has been applied. Failing the call now would invite a
    /// retry that applies the change twice, so if the catalog or inventory cannot be asked
    /// the cart is answered at its snapshot prices, without current prices or flags.
    async fn view_after_change(&self, owner: &Owner, live: &LiveCart, mut known: Known) -> pb::Cart {
        match self.view(owner, live, &mut known).await {
            Ok(cart) => cart,
            Err(error) => {
                tracing::warn!(%error, owner = %owner.key(), "cart changed but not re-priced");
                render(owner, live, None, self.limits().ttl_ms)
            }
        }
    }

    /// AddItem in two round trips: `cart_view.lua` (or nothing, on a cluster), the catalog and
    /// inventory for what it could not answer, then `cart_add.lua` with their figures.
    async fn add_in_two_steps(
        &self,
        owner: &Owner,
        request: &pb::AddItemRequest,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        let sku = request.sku.as_str();
        let (cold, mut known) = self.peek(owner, Some(sku)).await?;
        let (priced, counted) = self
            .upstream
            .ask(&mut known, std::slice::from_ref(&request.sku))
            .await;
        priced?;
        let product = sellable(&known, sku)?;
        counted?;
        let available = known.lookup.available.get(sku).copied().unwrap_or(0);
        let price = product.price.unwrap_or_default();
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
            .change(owner, cold, |absent| {
                scripts::add(client, &key, absent, expected, addition, limits)
            })
            .await?;
        self.added(owner, sku, expected, change, known, available).await
    }

    /// AddItem's answer to what the change script did; `available`: the units of `sku` its
    /// stock check used.
    async fn added(
        &self,
        owner: &Owner,
        sku: &str,
        expected: u64,
        change: Change,
        known: Known,
        available: i64,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::AddItemResponse {
                    outcome: pb::ItemOutcome::Applied as i32,
                    cart: Some(self.view_after_change(owner, &live, known).await),
                    available_quantity: 0,
                }))
            }
            Change::OutOfStock { cart, .. } => Ok(Response::new(pb::AddItemResponse {
                outcome: pb::ItemOutcome::OutOfStock as i32,
                cart: Some(self.view_after_change(owner, &cart, known).await),
                available_quantity: available,
            })),
            refusal => Err(self.refused(owner, sku, expected, refusal).into()),
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
        let (live, mut known) = match self.upstream.peek(&owner.redis_key(), None).await? {
            Some(peek) => match peek.cart {
                Some(live) => (live, peek.known),
                // Cold paths, boxed so the hot path's future does not carry their room.
                None => (Box::pin(self.warm(&owner)).await?.unwrap_or_default(), peek.known),
            },
            None => (Box::pin(self.read(&owner)).await?, Known::default()),
        };
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

        let (sku, expected) = (request.sku.as_str(), request.expected_version);
        if self.upstream.reads_in_scripts() {
            let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
            let quantity = request.quantity;
            let sent = self.upstream.epoch();
            let viewed = self
                .change(&owner, false, |absent| {
                    scripts::add_viewed(client, &key, absent, expected, sku, quantity, limits, &sent)
                })
                .await?;
            match viewed {
                AddViewed::Ask => {}
                AddViewed::NotSellable => return Err(not_sellable(error::SKU_INACTIVE, sku).into()),
                AddViewed::Changed {
                    change,
                    seen,
                    available,
                    epoch,
                } => {
                    let known = self.upstream.known(epoch, seen);
                    let added = self.added(&owner, sku, expected, change, known, available);
                    return added.await;
                }
            }
        }
        // What the script could not answer (a cache miss, a cold cart, a bucketed SKU...) or
        // a cluster: boxed, so the one-script path's future does not carry its room.
        Box::pin(self.add_in_two_steps(&owner, &request)).await
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
        let (cold, mut known) = self.peek(&owner, Some(sku)).await?;
        // Only a raise needs the figure, and only the script knows whether this is one: a
        // failed inventory call fails the update only if it turns out to be a raise.
        let (available, inventory_error) = if request.quantity > 0 {
            let asked = self
                .upstream
                .complete_stock(&mut known, std::slice::from_ref(&request.sku))
                .await;
            match asked {
                Ok(()) => (Some(known.lookup.available.get(sku).copied().unwrap_or(0)), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let (expected, quantity) = (request.expected_version, request.quantity);
        let change = self
            .change(&owner, cold, |absent| {
                scripts::set_quantity(client, &key, absent, expected, sku, quantity, available, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::UpdateItemResponse {
                    outcome: pb::ItemOutcome::Applied as i32,
                    cart: Some(self.view_after_change(&owner, &live, known).await),
                    available_quantity: 0,
                }))
            }
            Change::OutOfStock { cart, .. } => Ok(Response::new(pb::UpdateItemResponse {
                outcome: pb::ItemOutcome::OutOfStock as i32,
                cart: Some(self.view_after_change(&owner, &cart, known).await),
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
        let (cold, known) = self.peek(&owner, None).await?;
        let (client, key, limits) = (self.redis.next(), owner.redis_key(), self.limits());
        let expected = request.expected_version;
        let change = self
            .change(&owner, cold, |absent| {
                scripts::remove(client, &key, absent, expected, sku, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::RemoveItemResponse {
                    cart: Some(self.view_after_change(&owner, &live, known).await),
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
        let anonymous = self.read(&session).await?;
        if anonymous.lines.is_empty() {
            // Never had a cart, or merged before: nothing to fold in, nothing changes.
            let live = self.read(&customer).await?;
            return Ok(Response::new(pb::MergeCartsResponse {
                cart: Some(self.view_after_change(&customer, &live, Known::default()).await),
                capped_skus: Vec::new(),
                dropped_skus: Vec::new(),
            }));
        }

        // Asked before anything is written: a catalog outage leaves both carts as they were.
        let (_, products) = self.upstream.products(&anonymous.skus()).await?;
        let sellable = |sku: &str| products.get(sku).is_some_and(|product| product.active);
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
            // Nothing sellable to fold in: the customer's cart is only read, not changed.
            (self.read(&customer).await?, Vec::new(), Vec::new())
        } else {
            let merged = self
                .change(&customer, false, |absent| {
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
            self.write_behind.enqueue(customer.key(), merged.cart.clone());
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
        let emptied = self
            .change(&session, false, |absent| {
                scripts::clear(client, &session_key, absent, 0, limits)
            })
            .await?;
        // Any version: never a conflict, so always done.
        if let Change::Done(emptied) = emptied {
            self.write_behind.enqueue(session.key(), emptied);
        }
        Ok(Response::new(pb::MergeCartsResponse {
            cart: Some(self.view_after_change(&customer, &live, Known::default()).await),
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
            .change(&owner, false, |absent| {
                scripts::clear(client, &key, absent, expected, limits)
            })
            .await?;
        match change {
            Change::Done(live) => {
                // Written through as well as behind: the clear after a checkout must not wait
                // in the write-behind window, where this process dying and Redis being lost
                // later (each on its own) would bring the bought lines back. If this save
                // fails the write-behind still makes it; its pass also drops a live copy
                // older than the clear, should Redis come back with one.
                if live.version > 0
                    && let Err(error) = self.store.save_cart(live.to_stored(&owner.key())).await
                {
                    tracing::warn!(owner = %owner.key(), %error, "cleared cart not saved at once; the write-behind saves it");
                }
                self.write_behind.enqueue(owner.key(), live.clone());
                Ok(Response::new(pb::ClearCartResponse {
                    cart: Some(render(&owner, &live, None, limits.ttl_ms)),
                }))
            }
            refusal => Err(self.refused(&owner, "", expected, refusal).into()),
        }
    }
}
