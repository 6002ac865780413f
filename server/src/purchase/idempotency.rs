//! Idempotency keys (IETF draft semantics) for purchases: the key is required and
//! bounded; a record per (user, key) binds the key to the first request's fingerprint
//! and, once that request succeeded, stores its answer for a byte-identical replay.

use axum::http::HeaderMap;
use bytes::Bytes;
use uuid::Uuid;

use super::replays::Replay;
use crate::error::{ApiError, redis_unavailable};
use crate::redis::keys::sha256_hex;
use crate::redis::scripts::{self, IdempotencyBegin, IdempotencyEnd};
use crate::state::App;

pub const HEADER: &str = "idempotency-key";
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// Reads and validates the `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn key_from_headers(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let value = values.next().ok_or(ApiError::IdempotencyKeyMissing)?;
    if values.next().is_some() {
        return Err(ApiError::IdempotencyKeyInvalid);
    }
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty() && bytes.len() <= MAX_KEY_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if !valid {
        return Err(ApiError::IdempotencyKeyInvalid);
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// One request's hold on its idempotency record.
#[derive(Debug, Clone)]
pub struct Claim {
    record_key: String,
    fingerprint: String,
    user_id: Uuid,
    key: String,
    product_id: Uuid,
}

/// What the record says before the request runs.
#[derive(Debug)]
pub enum Begin {
    Proceed(Claim),
    Replay(Replay),
}

/// The fingerprint of a purchase request: method, route and product.
pub fn fingerprint(product_id: Uuid) -> String {
    sha256_hex(format!("POST /api/v1/user/buy/{product_id}").as_bytes())
}

pub async fn begin(app: &App, user_id: Uuid, key: &str, product_id: Uuid, order_id: Uuid) -> Result<Begin, ApiError> {
    #[cfg(feature = "broken")]
    let record_key = app.keys.idempotency(crate::broken::idempotency_owner(app, user_id), key);
    #[cfg(not(feature = "broken"))]
    let record_key = app.keys.idempotency(user_id, key);
    let fingerprint = fingerprint(product_id);
    #[cfg(feature = "broken")]
    if crate::broken::is(app, crate::broken::Broken::NewOrderOnReplay) {
        // Broken: the record is never consulted (nor written by `finish`).
        return Ok(Begin::Proceed(Claim { record_key, fingerprint, user_id, key: key.to_owned(), product_id }));
    }
    let mut conn = app.redis.clone();
    let ttl_ms = app.config.idempotency_ttl_s.saturating_mul(1000);
    // Read before the script runs: the record's expiry, counted from here, is never late.
    let now_ms = app.ids.now_ms();
    let begun = scripts::idempotency_begin(
        &mut conn,
        &record_key,
        &fingerprint,
        now_ms,
        app.config.idempotency_lease_ms,
        ttl_ms,
    )
    .await
    .map_err(redis_unavailable)?;
    match begun {
        IdempotencyBegin::Started => {
            Ok(Begin::Proceed(Claim { record_key, fingerprint, user_id, key: key.to_owned(), product_id }))
        }
        IdempotencyBegin::Mismatch => Err(ApiError::IdempotencyKeyReused),
        IdempotencyBegin::InFlight => Err(ApiError::IdempotencyInFlight { order_id }),
        IdempotencyBegin::Done { status, body, ttl_ms } => {
            let replay = Replay { status, body: Bytes::from(body) };
            if ttl_ms > 0 {
                app.replays.remember(user_id, key, product_id, replay.clone(), now_ms.saturating_add(ttl_ms));
            }
            Ok(Begin::Replay(replay))
        }
    }
}

/// Ends the claim: a success is stored for replay, anything else leaves the key bound
/// to this request but re-evaluated on retry.
pub async fn finish(app: &App, claim: &Claim, stored: Option<(u16, &[u8])>) {
    #[cfg(feature = "broken")]
    if crate::broken::is(app, crate::broken::Broken::NewOrderOnReplay) {
        return;
    }
    let end = match stored {
        Some((status, body)) => IdempotencyEnd::Done { status, body },
        None => IdempotencyEnd::Open,
    };
    let ttl_ms = app.config.idempotency_ttl_s.saturating_mul(1000);
    let mut conn = app.redis.clone();
    // Read before the script runs: the record's expiry, counted from here, is never late.
    let now_ms = app.ids.now_ms();
    match scripts::idempotency_finish(&mut conn, &claim.record_key, &claim.fingerprint, end, ttl_ms).await {
        Ok(true) => {
            if let Some((status, body)) = stored {
                let replay = Replay { status, body: Bytes::copy_from_slice(body) };
                let until_ms = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
                app.replays.remember(claim.user_id, &claim.key, claim.product_id, replay, until_ms);
            }
        }
        // The record belongs to another request now (its lease ran out and a retry took
        // it over): that request stores the answer.
        Ok(false) => {}
        // The record's lease runs out by itself; a retry then evaluates again, and the
        // derived order id keeps it from buying twice.
        Err(err) => tracing::warn!(error = %err, "storing the idempotency outcome failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers_with(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).expect("header value"));
        headers
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(key_from_headers(&headers_with(b"abc-123")).is_ok());
        assert!(matches!(key_from_headers(&HeaderMap::new()), Err(ApiError::IdempotencyKeyMissing)));
        assert!(matches!(key_from_headers(&headers_with(&[b'a'; 256])), Err(ApiError::IdempotencyKeyInvalid)));
        assert!(key_from_headers(&headers_with(&[b'a'; 255])).is_ok());
        assert!(matches!(key_from_headers(&headers_with(b"a b")), Err(ApiError::IdempotencyKeyInvalid)));
    }
}
