//! The OrderService RPCs: thin handlers. Each validates its request ([`crate::validate`]),
//! hands the work to the order aggregate ([`crate::order`]) or a saga
//! ([`crate::saga`]) through the engine, and maps [`OrdersError`] to a status once.

use std::sync::Arc;

use holdfast_platform::auth::{self, Caller};
use holdfast_proto::common::v1::PageResponse;
use holdfast_proto::orders::v1::order_service_server::OrderService;
use holdfast_proto::orders::v1::{
    CancelOrderRequest, CancelOrderResponse, CheckoutRequest, CheckoutResponse, GetCheckoutRequest,
    GetCheckoutResponse, GetOrderRequest, GetOrderResponse, InspectionResult, ListOrdersRequest,
    ListOrdersResponse, MarkReturnLostRequest, MarkReturnLostResponse, OrderStatus, ReceiveReturnRequest,
    ReceiveReturnResponse, RequestReturnRequest, RequestReturnResponse,
};
use tonic::{Request, Response, Status};

use crate::admission::{Admission, AdmissionSettings, Admit};
use crate::authz;
use crate::context::{OrdersStore, StepContext};
use crate::engine::Engine;
use crate::error::OrdersError;
use crate::order;
use crate::saga::{cancel, checkout, returns};
use crate::validate;

/// The OrderService implementation.
pub struct Orders<S> {
    engine: Arc<Engine<S>>,
    admission: Arc<Admission<S>>,
}

impl<S: OrdersStore> Orders<S> {
    /// The service over `engine`, without admission limits or a waiting room (every
    /// checkout runs at once).
    pub fn new(engine: Arc<Engine<S>>) -> Self {
        let admission = Arc::new(Admission::new(
            Arc::clone(&engine),
            None,
            AdmissionSettings::default(),
        ));
        Self { engine, admission }
    }

    /// The service over `admission`'s engine, admitting checkouts through it (run its
    /// waiting room with [`crate::waiting_room::run`]).
    pub fn with_admission(admission: Arc<Admission<S>>) -> Self {
        Self {
            engine: Arc::clone(&admission.engine),
            admission,
        }
    }

    fn ctx(&self) -> &StepContext<S> {
        self.engine.context()
    }

    /// Checkout: the key's stored answer, or its saga run to the end and its answer. The
    /// inner result is the answer (a response, or the error status stored on the key and
    /// replayed as is); the outer error is why no answer could be had.
    async fn answer(
        &self,
        request: &CheckoutRequest,
    ) -> Result<Result<CheckoutResponse, Status>, OrdersError> {
        validate::checkout(request)?;
        // Held until the checkout ends: it counts against the capacity.
        let _slot = match self.admission.admit(request).await? {
            Admit::Answer(answer) => return Ok(*answer),
            Admit::Run(slot) => slot,
        };
        let new = match checkout::claim(self.ctx(), request).await? {
            checkout::Claim::Answered(answer) => return Ok(answer.into_result()),
            checkout::Claim::Run(new) => new,
        };
        let saga = self.engine.open(new).await?;
        self.engine.run_to_end(saga).await?;
        Ok(checkout::stored_answer(self.ctx(), &request.idempotency_key)
            .await?
            .into_result())
    }

    async fn cancel(&self, request: &CancelOrderRequest) -> Result<CancelOrderResponse, OrdersError> {
        validate::cancel_order(request)?;
        let (order, _) = order::load(self.ctx(), &request.order_id).await?;
        match cancel::admit(self.ctx(), &order, &request.reason).await? {
            cancel::Admission::AlreadyCancelled => return Ok(CancelOrderResponse { order: Some(order) }),
            cancel::Admission::Run(new) => {
                let saga = self.engine.open(new).await?;
                let id = saga.id.clone();
                self.engine.run_to_end(saga).await?;
                let ended = self
                    .ctx()
                    .store
                    .get_saga(&id)
                    .await?
                    .ok_or_else(|| OrdersError::Internal("saga vanished".into()))?;
                cancel::outcome(&ended)?;
            }
        }
        let (order, _) = order::load(self.ctx(), &order.id).await?;
        Ok(CancelOrderResponse { order: Some(order) })
    }

    async fn receive(&self, request: &ReceiveReturnRequest) -> Result<ReceiveReturnResponse, OrdersError> {
        let inspection = validate::receive_return(request)?;
        let (order, _) = order::load(self.ctx(), &request.order_id).await?;
        let ret = returns::open_return(&order, &request.return_id, inspection)?;
        if inspection == InspectionResult::Failed {
            let order = returns::reject(self.ctx(), &order.id, &request.inspection_note).await?;
            return Ok(ReceiveReturnResponse { order: Some(order) });
        }
        let new = returns::begin(&order.id, &ret, &request.inspection_note, &request.warehouse_id);
        let outcome = match self.engine.open(new).await {
            Ok(saga) => self.engine.run_to_end(saga).await,
            Err(error) => Err(error),
        };
        let (order, _) = order::load(self.ctx(), &order.id).await?;
        match outcome {
            Ok(()) => Ok(ReceiveReturnResponse { order: Some(order) }),
            // Received but the refund is being retried: RETURN_RECEIVED, as the proto says.
            Err(_) if order::status(&order) == OrderStatus::ReturnReceived => {
                Ok(ReceiveReturnResponse { order: Some(order) })
            }
            Err(error) => Err(error),
        }
    }
}

#[tonic::async_trait]
impl<S: OrdersStore> OrderService for Orders<S> {
    async fn checkout(
        &self,
        request: Request<CheckoutRequest>,
    ) -> Result<Response<CheckoutResponse>, Status> {
        authz::check_checkout(Caller::of(&request), request.get_ref())?;
        self.answer(request.get_ref()).await?.map(Response::new)
    }

    async fn get_checkout(
        &self,
        request: Request<GetCheckoutRequest>,
    ) -> Result<Response<GetCheckoutResponse>, Status> {
        let (caller, request) = auth::split(request);
        validate::get_checkout(&request)?;
        let checkout = self.admission.lookup(&request.idempotency_key).await??;
        // A customer reads only a checkout whose order is theirs (a pending one names no
        // order and carries nothing but its place in the queue).
        if let Some(order) = &checkout.order {
            Caller::check_customer(caller.as_ref(), &order.customer_id)?;
        }
        Ok(Response::new(GetCheckoutResponse {
            checkout: Some(checkout),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let (caller, request) = auth::split(request);
        validate::order_id(&request.order_id)?;
        let (order, _) = order::load(self.ctx(), &request.order_id).await?;
        Caller::check_customer(caller.as_ref(), &order.customer_id)?;
        Ok(Response::new(GetOrderResponse { order: Some(order) }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let (caller, request) = auth::split(request);
        Caller::check_customer(caller.as_ref(), &request.customer_id)?;
        let limit = validate::list_orders(&request)?;
        let page = request.page.unwrap_or_default();
        let cursor = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let listed = self
            .ctx()
            .store
            .list_orders_by_customer(&request.customer_id, &request.statuses, cursor, limit)
            .await
            .map_err(OrdersError::from)?;
        let orders = listed
            .orders
            .iter()
            .map(order::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(ListOrdersResponse {
            orders,
            page: Some(PageResponse {
                next_page_token: listed.next_cursor.unwrap_or_default(),
            }),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        authz::check_order(self.ctx(), Caller::of(&request), &request.get_ref().order_id).await?;
        Ok(Response::new(self.cancel(request.get_ref()).await?))
    }

    async fn request_return(
        &self,
        request: Request<RequestReturnRequest>,
    ) -> Result<Response<RequestReturnResponse>, Status> {
        let (caller, request) = auth::split(request);
        validate::request_return(&request)?;
        let (order, _) = order::load(self.ctx(), &request.order_id).await?;
        Caller::check_customer(caller.as_ref(), &order.customer_id)?;
        let lines = returns::priced_lines(&order, &request.lines)?;
        let order = returns::request(self.ctx(), &order.id, lines, &request.reason).await?;
        Ok(Response::new(RequestReturnResponse { order: Some(order) }))
    }

    async fn receive_return(
        &self,
        request: Request<ReceiveReturnRequest>,
    ) -> Result<Response<ReceiveReturnResponse>, Status> {
        Ok(Response::new(self.receive(request.get_ref()).await?))
    }

    async fn mark_return_lost(
        &self,
        request: Request<MarkReturnLostRequest>,
    ) -> Result<Response<MarkReturnLostResponse>, Status> {
        let request = request.into_inner();
        validate::mark_return_lost(&request)?;
        let (order, _) = order::load(self.ctx(), &request.order_id).await?;
        let order = returns::mark_lost(self.ctx(), &order.id, &request.reason).await?;
        Ok(Response::new(MarkReturnLostResponse { order: Some(order) }))
    }
}
