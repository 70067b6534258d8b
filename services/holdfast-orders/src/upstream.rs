//! The services checkout calls, each call with a deadline and the caller's trace.

use std::time::Duration;

use holdfast_platform::PeerChannel;
use holdfast_platform::telemetry::TracePropagation;
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::warehouse::v1::warehouse_service_client::WarehouseServiceClient;
use tonic::Request;
use tonic::codegen::InterceptedService;

type Traced = InterceptedService<PeerChannel, TracePropagation>;

/// Channels to the services orders depends on: gRPC (lazy channels are fine) or in-process
/// ([`holdfast_platform::Context::channel`]); `tonic::transport::Channel` converts with `.into()`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// CatalogService: prices and titles.
    pub catalog: PeerChannel,
    /// InventoryService: holds.
    pub inventory: PeerChannel,
    /// CartService: the cart to check out.
    pub cart: PeerChannel,
    /// PaymentsService: the PSP.
    pub payments: PeerChannel,
    /// WarehouseService: decides what of a cancelled order had shipped.
    pub warehouse: PeerChannel,
}

/// Typed clients with deadlines.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Catalog.
    pub catalog: CatalogServiceClient<Traced>,
    /// Inventory.
    pub inventory: InventoryServiceClient<Traced>,
    /// Cart.
    pub cart: CartServiceClient<Traced>,
    /// Payments.
    pub payments: PaymentsServiceClient<Traced>,
    /// Warehouse.
    pub warehouse: WarehouseServiceClient<Traced>,
    upstream_timeout: Duration,
    payment_timeout: Duration,
}

impl Clients {
    /// Clients over `upstreams`: `upstream_timeout` for every call but the PSP's money
    /// movements, which get `payment_timeout`.
    pub fn new(upstreams: Upstreams, upstream_timeout: Duration, payment_timeout: Duration) -> Self {
        Self::presenting(
            upstreams,
            upstream_timeout,
            payment_timeout,
            TracePropagation::default(),
        )
    }

    /// Like [`Clients::new`], every call presenting `outbound`'s credentials (this
    /// process's service token, [`holdfast_platform::Context::outbound`]).
    pub fn presenting(
        upstreams: Upstreams,
        upstream_timeout: Duration,
        payment_timeout: Duration,
        outbound: TracePropagation,
    ) -> Self {
        Self {
            catalog: CatalogServiceClient::with_interceptor(upstreams.catalog, outbound.clone()),
            inventory: InventoryServiceClient::with_interceptor(upstreams.inventory, outbound.clone()),
            cart: CartServiceClient::with_interceptor(upstreams.cart, outbound.clone()),
            payments: PaymentsServiceClient::with_interceptor(upstreams.payments, outbound.clone()),
            warehouse: WarehouseServiceClient::with_interceptor(upstreams.warehouse, outbound),
            upstream_timeout,
            payment_timeout,
        }
    }

    /// A request with the upstream deadline, marked as part of an admitted checkout (so
    /// inventory does not count its Reserve against the per-SKU Reserve limit again).
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.upstream_timeout);
        request.metadata_mut().insert(
            holdfast_platform::admission::ADMITTED_HEADER,
            tonic::metadata::MetadataValue::from_static("checkout"),
        );
        request
    }

    /// A request with the PSP deadline.
    pub fn payment_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.payment_timeout);
        request
    }
}

/// Whether an upstream error is worth retrying (the call may not have happened).
pub fn transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}
