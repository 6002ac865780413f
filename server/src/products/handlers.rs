//! Catalogue reads (rate-limited per IP, cache-aside) and admin writes (create, update,
//! restock, delete). Every write refreshes the cache and then the live sale state.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::live;
use super::model::{
    CreateProduct, ListQuery, MAX_STOCK, Product, ProductPage, ProductView, RestockRequest, UpdateProduct,
    UpdateRefusal, validate_quantity,
};
use crate::auth::extract::AdminUser;
use crate::error::{ApiError, ApiResult, redis_unavailable};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::ratelimit::{self, Action, RateLimitHeaders, Scope};
use crate::sale;
use crate::sale::product_cache::{self as cache, CachedPage};
use crate::sale::product_store::{self as store, Change};
use crate::state::{App, AppState};

/// `GET /products` (and the seed's `/product`, `/user/products`).
pub async fn list(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limits = read_limit(&app, ip).await?;
    let page_size = query.page_size().map_err(ApiError::BadRequest)?;
    let page = match query.is_cacheable() {
        true => match cache::get_page(&app).await {
            Some(page) => page,
            None => {
                let page = load_page(&app, None, page_size).await?;
                cache::fill_page(&app, &page).await;
                page
            }
        },
        false => load_page(&app, query.after, page_size).await?,
    };
    let items = live::views(&app, page.items).await;
    Ok(with_limits(Json(ProductPage { items, next_cursor: page.next_cursor }).into_response(), &limits))
}

async fn load_page(app: &App, after: Option<Uuid>, page_size: u32) -> ApiResult<CachedPage> {
    let mut items = store::list_products(app, after, page_size + 1).await?;
    let page_size = page_size as usize;
    let next_cursor = match items.len() > page_size {
        true => {
            items.truncate(page_size);
            items.last().map(|product| product.id.clone())
        }
        false => None,
    };
    Ok(CachedPage { items, next_cursor })
}

/// `GET /products/{id}` (and the seed's `/product/{id}`).
pub async fn detail(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let limits = read_limit(&app, ip).await?;
    let product = cache::load_product(&app, id).await?;
    let view = live::view(&app, product).await;
    Ok(with_limits(Json(view).into_response(), &limits))
}

async fn read_limit(app: &AppState, ip: std::net::IpAddr) -> ApiResult<RateLimitHeaders> {
    ratelimit::check(app, Action::Read, Scope::Ip(ip), app.config.limits.reads_per_ip_per_min).await
}

fn with_limits(mut response: Response, limits: &RateLimitHeaders) -> Response {
    limits.apply(response.headers_mut());
    response
}

/// `POST /products` (and the seed's `/product/create-product`).
pub async fn create(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<CreateProduct>,
) -> ApiResult<Response> {
    let id = app.ids.new_record_id();
    let product = body.into_product(id, app.ids.now_ms()).map_err(ApiError::InvalidBody)?;
    store::insert_product(&app, &product).await?;
    cache::after_write(&app, &product).await;
    if let Err(err) = sale::load_initial(&app, id, &product).await {
        // The first purchase (or read) loads the sale state from MongoDB.
        tracing::warn!(error = %err, product_id = %id, "loading the new sale state failed");
    }
    tracing::info!(product_id = %id, admin = %admin.user_id, stock = product.stock_total, "product created");
    let view = live::view(&app, product).await;
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/products/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PUT /products/{id}` (and the seed's `/products/update-product/{id}`). Stock is not
/// changed here (see restock). The update is the product's next revision, applied on
/// top of any concurrent write. A retry with the same body is harmless, so a Redis
/// failure after MongoDB took the update answers 503 and the client retries.
pub async fn update(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> ApiResult<Json<ProductView>> {
    let now_ms = app.ids.now_ms();
    let (product, live) = store::revise(&app, id, |current| {
        let current = live_or_not_found(current)?;
        Ok(Change::To(body.apply(current, now_ms).map_err(|refusal| match refusal {
            UpdateRefusal::Invalid(why) => ApiError::InvalidBody(why),
            UpdateRefusal::Conflict(why) => ApiError::StateConflict(why),
        })?))
    })
    .await?;
    live.map_err(redis_unavailable)?;
    tracing::info!(product_id = %id, admin = %admin.user_id, revision = product.revision, "product updated");
    Ok(Json(live::view(&app, product).await))
}

/// `POST /products/{id}/restock`: adds units to the recorded total as the product's next
/// revision (on top of any concurrent write: twenty concurrent restocks of one unit add
/// twenty), then raises the live stock to it. If Redis misses that step, the next read
/// of the product does it (see `live`), so the answer is still 200: a retry would add
/// the units twice.
pub async fn restock(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RestockRequest>,
) -> ApiResult<Json<ProductView>> {
    validate_quantity("quantity", body.quantity).map_err(ApiError::InvalidBody)?;
    let now_ms = app.ids.now_ms();
    let (product, live) = store::revise(&app, id, |current| {
        let current = live_or_not_found(current)?;
        if current.stock_total > MAX_STOCK - body.quantity {
            return Err(ApiError::StateConflict(format!(
                "restock would take the stock from {} past {MAX_STOCK}",
                current.stock_total
            )));
        }
        let mut next = current.clone();
        next.stock_total += body.quantity;
        next.updated_at_ms = now_ms.max(current.updated_at_ms);
        Ok(Change::To(next))
    })
    .await?;
    if let Err(err) = live {
        tracing::warn!(error = %err, product_id = %id, "restock not yet applied to the live stock");
    }
    tracing::info!(
        product_id = %id, admin = %admin.user_id, quantity = body.quantity, revision = product.revision,
        "product restocked"
    );
    Ok(Json(live::view(&app, product).await))
}

/// `DELETE /products/{id}` (and the seed's `/product/delete-product/{id}`): a soft
/// delete as the product's last revision (no write applies after it), then the sale
/// state goes, leaving a tombstone no load brings back. Repeating it is harmless, so a
/// Redis failure answers 503 for the client to retry (a loaded sale would keep selling).
pub async fn delete(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let now_ms = app.ids.now_ms();
    let (_, live) = store::revise(&app, id, |current| {
        if current.deleted {
            return Ok(Change::Keep);
        }
        let mut next = current.clone();
        next.deleted = true;
        next.updated_at_ms = now_ms.max(current.updated_at_ms);
        Ok(Change::To(next))
    })
    .await?;
    live.map_err(redis_unavailable)?;
    tracing::info!(product_id = %id, admin = %admin.user_id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn live_or_not_found(product: &Product) -> ApiResult<&Product> {
    match product.deleted {
        true => Err(ApiError::NotFound("product")),
        false => Ok(product),
    }
}
