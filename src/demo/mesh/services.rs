//! The services' handlers: what each does with a request, and whom it calls.

use super::*;

#[derive(Deserialize)]
pub(super) struct CheckoutQuery {
    pub(super) user: String,
    pub(super) item: String,
}

pub(super) struct GatewayService {
    pub(super) users: Edge<HttpTarget>,
    pub(super) orders: Edge<OrdersClient<GrpcChannel>>,
}

/// The gateway: places the order through users, then shows the user's recent orders.
pub(super) async fn checkout(
    State(gw): State<Arc<GatewayService>>,
    Query(q): Query<CheckoutQuery>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let path = format!("/users/{}/orders", q.user);
    let body = json!({ "item": q.item });
    let placed = gw
        .users
        .call(move |t| t.post(path, body))
        .await
        .map_err(bad_gateway)?;
    let user = q.user.clone();
    let recent = gw
        .orders
        .call(move |mut c| async move {
            Ok(c.list_orders(pb::ListOrdersRequest { user })
                .await?
                .into_inner())
        })
        .await
        .map_err(bad_gateway)?;
    Ok(Json(json!({
        "stage": propagation::current_stage().map(|s| s.to_string()),
        "order": placed,
        "recent_orders_served_by": recent.served_by,
    })))
}

pub(super) struct UsersService {
    pub(super) orders: Edge<OrdersClient<GrpcChannel>>,
}

#[derive(Deserialize)]
pub(super) struct NewOrder {
    pub(super) item: String,
}

/// Users: places an order for a user with the orders service.
pub(super) async fn place_order(
    State(users): State<Arc<UsersService>>,
    Path(user): Path<String>,
    Json(order): Json<NewOrder>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let reply = users
        .orders
        .call(move |mut c| async move {
            Ok(c.place_order(pb::PlaceOrderRequest {
                user,
                item: order.item,
                quantity: 1,
            })
            .await?
            .into_inner())
        })
        .await
        .map_err(bad_gateway)?;
    Ok(Json(
        json!({ "order_id": reply.order_id, "served_by": reply.served_by }),
    ))
}

/// Orders' table, in an in-memory SQLite database of each orders instance.
const CREATE_ORDERS: &str =
    "CREATE TABLE orders (id TEXT PRIMARY KEY, user TEXT NOT NULL, item TEXT NOT NULL)";
const INSERT_ORDER: &str = "INSERT INTO orders (id, user, item) VALUES (?1, ?2, ?3)";

pub(super) fn orders_db() -> Result<Arc<std::sync::Mutex<rusqlite::Connection>>, DemoError> {
    let err = |e: rusqlite::Error| DemoError::Database(e.to_string());
    let db = rusqlite::Connection::open_in_memory().map_err(err)?;
    db.execute(CREATE_ORDERS, ()).map_err(err)?;
    Ok(Arc::new(std::sync::Mutex::new(db)))
}

#[derive(Clone)]
pub(super) struct OrdersService {
    /// Publishes `OrderPlaced` (with the messaging hop).
    pub(super) publisher: Option<super::broker::Publisher>,
    pub(super) stage: String,
    pub(super) next_order: Arc<AtomicU64>,
    pub(super) payments: Edge<HttpTarget>,
    pub(super) inventory: Edge<InventoryClient<GrpcChannel>>,
    pub(super) tracer: SdkTracer,
    pub(super) db: Arc<std::sync::Mutex<rusqlite::Connection>>,
}

impl OrdersService {
    /// Stores the order, with the CLIENT span a database instrumentation records: a call to a
    /// back end that exports no spans (a virtual node on grayscope's graph) and does not route on
    /// the stage.
    fn store(&self, order_id: &str, user: &str, item: &str) -> Result<(), tonic::Status> {
        use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
        let mut span = self
            .tracer
            .span_builder("INSERT orders")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system", "sqlite"),
                KeyValue::new("db.system.name", "sqlite"),
                KeyValue::new("db.operation.name", "INSERT"),
                KeyValue::new("db.collection.name", "orders"),
                KeyValue::new("db.query.text", INSERT_ORDER),
            ])
            .start_with_context(&self.tracer, &Context::current());
        let stored = self
            .db
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .execute(INSERT_ORDER, (order_id, user, item));
        if let Err(e) = &stored {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
        stored
            .map(|_| ())
            .map_err(|e| tonic::Status::internal(format!("storing the order: {e}")))
    }

    /// Prices the order: in-process work with an INTERNAL span of its own.
    fn price(&self, item: &str, quantity: u32) -> u64 {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let mut span = self
            .tracer
            .start_with_context("price order", &Context::current());
        let price = item.bytes().map(u64::from).sum::<u64>() * u64::from(quantity);
        span.set_attribute(KeyValue::new("shop.price", price as i64));
        span.end();
        price
    }
}

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn place_order(
        &self,
        req: tonic::Request<pb::PlaceOrderRequest>,
    ) -> Result<tonic::Response<pb::PlaceOrderReply>, tonic::Status> {
        let req = req.into_inner();
        let order_id = format!(
            "{}-{}",
            self.stage,
            self.next_order.fetch_add(1, Ordering::Relaxed)
        );
        self.store(&order_id, &req.user, &req.item)?;
        let price = self.price(&req.item, req.quantity);
        let charge = json!({ "order_id": order_id, "user": req.user, "amount": price });
        self.payments
            .call(move |t| t.post("/charge".into(), charge))
            .await?;
        let (item, quantity) = (req.item, req.quantity);
        self.inventory
            .call(move |mut c| async move {
                Ok(c.reserve(pb::ReserveRequest { item, quantity })
                    .await?
                    .into_inner())
            })
            .await?;
        if let Some(p) = &self.publisher {
            p.order_placed(order_id.clone()).await;
        }
        Ok(tonic::Response::new(pb::PlaceOrderReply {
            order_id,
            served_by: self.stage.clone(),
        }))
    }

    async fn list_orders(
        &self,
        req: tonic::Request<pb::ListOrdersRequest>,
    ) -> Result<tonic::Response<pb::ListOrdersReply>, tonic::Status> {
        let user = req.into_inner().user;
        Ok(tonic::Response::new(pb::ListOrdersReply {
            order_ids: vec![format!("{user}-1")],
            served_by: self.stage.clone(),
        }))
    }
}

#[derive(Clone)]
pub(super) struct InventoryService;

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(
        &self,
        _: tonic::Request<pb::ReserveRequest>,
    ) -> Result<tonic::Response<pb::ReserveReply>, tonic::Status> {
        Ok(tonic::Response::new(pb::ReserveReply { reserved: true }))
    }
}

/// Payments: the last hop of checkout.
pub(super) async fn charge(Json(_): Json<Value>) -> Json<Value> {
    Json(json!({ "charged": true }))
}
