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

#[derive(Clone)]
pub(super) struct OrdersService {
    /// Publishes `OrderPlaced` (with the messaging hop).
    pub(super) publisher: Option<super::broker::Publisher>,
    pub(super) stage: String,
    pub(super) next_order: Arc<AtomicU64>,
    pub(super) payments: Edge<HttpTarget>,
    pub(super) inventory: Edge<InventoryClient<GrpcChannel>>,
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
        let charge = json!({ "order_id": order_id, "user": req.user });
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
