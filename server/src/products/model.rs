//! The product API shapes and their validation; the record itself is `db::records::Product`.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

pub use crate::db::records::{
    MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_PRICE_CENTS, MAX_STOCK, MAX_TIMESTAMP_MS, Product, SaleState,
};

/// A product as the API shows it: the catalogue record (possibly from the cache) plus
/// the live stock, read from the sale state on every request.
#[derive(Debug, Clone, Serialize)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock_total: i64,
    pub one_per_user: bool,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The product's revision: 0 at creation, one more per update, restock or delete.
    pub revision: i64,
    /// Units still for sale; `null` when the live sale state cannot be read.
    pub remaining: Option<i64>,
    pub sale_state: SaleState,
    /// Present (and true) while the sale is paused for a rebuild.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl ProductView {
    pub fn new(product: Product, live: LiveStock, now_ms: i64) -> Self {
        let sale_state = product.sale_state(now_ms, live.remaining);
        Self {
            id: product.id,
            name: product.name,
            description: product.description,
            price_cents: product.price_cents,
            stock_total: product.stock_total,
            one_per_user: product.one_per_user,
            sale_starts_at_ms: product.sale_starts_at_ms,
            sale_ends_at_ms: product.sale_ends_at_ms,
            created_at_ms: product.created_at_ms,
            updated_at_ms: product.updated_at_ms,
            revision: product.revision,
            remaining: live.remaining,
            sale_state,
            paused: live.paused,
        }
    }
}

/// What the live sale state says about a product's stock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStock {
    pub remaining: Option<i64>,
    pub paused: bool,
}

/// A page of the catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct ProductPage {
    pub items: Vec<ProductView>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Deserializes a field that may be absent but, when present, must not be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A JSON integer as JSON Schema's `"type": "integer"` (the OpenAPI description's) has
/// it: any number whose value is a whole number, so `3`, `3.0` and `3e0` are the same 3;
/// `3.5` and anything outside the 64-bit range are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integral(pub i64);

impl<'de> Deserialize<'de> for Integral {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integral;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number within the 64-bit range")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Integral, E> {
                Ok(Integral(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Integral, E> {
                i64::try_from(value).map(Integral).map_err(|_| E::custom(format!("{value} is past the 64-bit range")))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Integral, E> {
                // -2^63 is exact as an f64; 2^63 is the first value past the range.
                const LIMIT: f64 = 9_223_372_036_854_775_808.0;
                if value.fract() != 0.0 || !(-LIMIT..LIMIT).contains(&value) {
                    return Err(E::custom(format!("{value} is not a whole number within the 64-bit range")));
                }
                Ok(Integral(value as i64))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Integral::deserialize(deserializer).map(|value| value.0)
}

fn optional_integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<Integral>::deserialize(deserializer).map(|value| value.map(|value| value.0))
}

fn present_integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    integral(deserializer).map(Some)
}

/// A field where absent (`None`), `null` (`Some(None)`) and a value differ.
fn nullable_integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    optional_integral(deserializer).map(Some)
}

/// `POST /products`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(deserialize_with = "integral")]
    pub price_cents: i64,
    #[serde(deserialize_with = "integral")]
    pub stock: i64,
    #[serde(default = "default_true")]
    pub one_per_user: bool,
    #[serde(default, deserialize_with = "optional_integral")]
    pub sale_starts_at_ms: Option<i64>,
    #[serde(default, deserialize_with = "optional_integral")]
    pub sale_ends_at_ms: Option<i64>,
}

impl CreateProduct {
    /// Checks every bound; the product to insert, or why not.
    pub fn into_product(self, id: Uuid, now_ms: i64) -> Result<Product, String> {
        let name = validate_name(&self.name)?;
        validate_description(&self.description)?;
        validate_price(self.price_cents)?;
        validate_quantity("stock", self.stock)?;
        validate_window(self.sale_starts_at_ms, self.sale_ends_at_ms)?;
        Ok(Product {
            id: id.to_string(),
            name,
            description: self.description,
            price_cents: self.price_cents,
            stock_total: self.stock,
            one_per_user: self.one_per_user,
            sale_starts_at_ms: self.sale_starts_at_ms,
            sale_ends_at_ms: self.sale_ends_at_ms,
            deleted: false,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            revision: 0,
        })
    }
}

/// `PUT /products/{id}`: absent fields stay; `null` clears a sale window bound.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present_integral")]
    pub price_cents: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub one_per_user: Option<bool>,
    #[serde(default, deserialize_with = "nullable_integral")]
    pub sale_starts_at_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable_integral")]
    pub sale_ends_at_ms: Option<Option<i64>>,
}

/// Why an update is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateRefusal {
    /// The body breaks a rule on its own (an answer of 422).
    Invalid(String),
    /// The body is valid, but the product it would make is not: its sale would end
    /// before the stored start, or start after the stored end (an answer of 409).
    Conflict(String),
}

impl UpdateProduct {
    /// The product with this update applied, every bound checked: first the body's own
    /// fields, then the product they make with the stored ones.
    pub fn apply(&self, current: &Product, now_ms: i64) -> Result<Product, UpdateRefusal> {
        self.check().map_err(UpdateRefusal::Invalid)?;
        let mut product = current.clone();
        if let Some(name) = &self.name {
            product.name = validate_name(name).map_err(UpdateRefusal::Invalid)?;
        }
        if let Some(description) = &self.description {
            product.description.clone_from(description);
        }
        if let Some(price_cents) = self.price_cents {
            product.price_cents = price_cents;
        }
        if let Some(one_per_user) = self.one_per_user {
            product.one_per_user = one_per_user;
        }
        if let Some(starts) = self.sale_starts_at_ms {
            product.sale_starts_at_ms = starts;
        }
        if let Some(ends) = self.sale_ends_at_ms {
            product.sale_ends_at_ms = ends;
        }
        validate_window(product.sale_starts_at_ms, product.sale_ends_at_ms).map_err(UpdateRefusal::Conflict)?;
        product.updated_at_ms = now_ms.max(current.updated_at_ms);
        Ok(product)
    }

    /// The rules the body must keep whatever product it is applied to.
    fn check(&self) -> Result<(), String> {
        if self.name.is_none()
            && self.description.is_none()
            && self.price_cents.is_none()
            && self.one_per_user.is_none()
            && self.sale_starts_at_ms.is_none()
            && self.sale_ends_at_ms.is_none()
        {
            return Err("the update names no field".to_owned());
        }
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(description) = &self.description {
            validate_description(description)?;
        }
        if let Some(price_cents) = self.price_cents {
            validate_price(price_cents)?;
        }
        validate_window(self.sale_starts_at_ms.flatten(), self.sale_ends_at_ms.flatten())
    }
}

/// `POST /products/{id}/restock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    #[serde(deserialize_with = "integral")]
    pub quantity: i64,
}

/// Query of the catalogue list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Page size, 1..=[`MAX_PAGE_SIZE`]; [`DEFAULT_PAGE_SIZE`] when absent.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<Uuid>,
}

/// Products per page when the query names no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page.
pub const MAX_PAGE_SIZE: u32 = 200;

impl ListQuery {
    pub fn page_size(&self) -> Result<u32, String> {
        match self.limit {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => Ok(limit),
            Some(_) => Err(format!("limit must be between 1 and {MAX_PAGE_SIZE}")),
        }
    }

    /// Only the first page at the default size is cached (it is what nearly every
    /// client asks for, and one key keeps invalidation a single `DEL`).
    pub fn is_cacheable(&self) -> bool {
        self.after.is_none() && self.limit.is_none_or(|limit| limit == DEFAULT_PAGE_SIZE)
    }
}

pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".to_owned());
    }
    Ok(name.to_owned())
}

pub fn validate_description(description: &str) -> Result<(), String> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"));
    }
    Ok(())
}

pub fn validate_price(price_cents: i64) -> Result<(), String> {
    if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(format!("price_cents must be between 0 and {MAX_PRICE_CENTS}"));
    }
    Ok(())
}

/// A stock or restock quantity: 1..=[`MAX_STOCK`].
pub fn validate_quantity(field: &str, quantity: i64) -> Result<(), String> {
    if !(1..=MAX_STOCK).contains(&quantity) {
        return Err(format!("{field} must be between 1 and {MAX_STOCK}"));
    }
    Ok(())
}

/// Window bounds are positive instants (the sale state uses 0 for "no bound") and the
/// end comes after the start.
pub fn validate_window(starts_at_ms: Option<i64>, ends_at_ms: Option<i64>) -> Result<(), String> {
    for (field, value) in [("sale_starts_at_ms", starts_at_ms), ("sale_ends_at_ms", ends_at_ms)] {
        if value.is_some_and(|ms| !(1..=MAX_TIMESTAMP_MS).contains(&ms)) {
            return Err(format!("{field} must be between 1 and {MAX_TIMESTAMP_MS}"));
        }
    }
    if let (Some(starts), Some(ends)) = (starts_at_ms, ends_at_ms) {
        if ends <= starts {
            return Err("sale_ends_at_ms must be after sale_starts_at_ms".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(starts: Option<i64>, ends: Option<i64>) -> Product {
        Product {
            id: Uuid::from_u128(1).to_string(),
            name: "p".into(),
            description: String::new(),
            price_cents: 1,
            stock_total: 3,
            one_per_user: true,
            sale_starts_at_ms: starts,
            sale_ends_at_ms: ends,
            deleted: false,
            created_at_ms: 10,
            updated_at_ms: 10,
            revision: 0,
        }
    }

    #[test]
    fn the_sale_state_follows_the_window_then_the_stock() {
        let p = product(Some(100), Some(200));
        assert_eq!(p.sale_state(99, Some(3)), SaleState::NotStarted);
        assert_eq!(p.sale_state(100, Some(3)), SaleState::Open);
        assert_eq!(p.sale_state(150, Some(0)), SaleState::SoldOut);
        assert_eq!(p.sale_state(150, None), SaleState::Open);
        assert_eq!(p.sale_state(200, Some(3)), SaleState::Ended);
        assert_eq!(product(None, None).sale_state(i64::MAX, Some(1)), SaleState::Open);
    }

    #[test]
    fn a_window_must_end_after_it_starts_and_use_positive_instants() {
        assert!(validate_window(Some(1), Some(2)).is_ok());
        assert!(validate_window(None, None).is_ok());
        assert!(validate_window(Some(2), Some(2)).is_err());
        assert!(validate_window(Some(0), None).is_err());
        assert!(validate_window(None, Some(-5)).is_err());
        assert!(validate_window(Some(MAX_TIMESTAMP_MS + 1), None).is_err());
    }

    #[test]
    fn an_update_distinguishes_absent_null_and_value() {
        let update: UpdateProduct =
            serde_json::from_str(r#"{"sale_starts_at_ms": null, "sale_ends_at_ms": 500}"#).expect("valid update");
        assert_eq!(update.sale_starts_at_ms, Some(None));
        assert_eq!(update.sale_ends_at_ms, Some(Some(500)));
        assert_eq!(update.name, None);
        let updated = update.apply(&product(Some(100), None), 12).expect("valid");
        assert_eq!(updated.sale_starts_at_ms, None);
        assert_eq!(updated.sale_ends_at_ms, Some(500));
        assert_eq!(updated.updated_at_ms, 12);
        assert_eq!(update.apply(&product(None, None), 5).expect("valid").updated_at_ms, 10, "never goes back");
    }

    #[test]
    fn integers_are_whole_numbers_by_value_as_json_schema_has_them() {
        let create: CreateProduct =
            serde_json::from_str(r#"{"name": "n", "price_cents": 100.0, "stock": 3e0, "sale_ends_at_ms": 5.0}"#)
                .expect("whole numbers written with a fraction or an exponent");
        assert_eq!((create.price_cents, create.stock, create.sale_ends_at_ms), (100, 3, Some(5)));
        let update: UpdateProduct =
            serde_json::from_str(r#"{"price_cents": 7.0, "sale_starts_at_ms": null}"#).expect("valid update");
        assert_eq!((update.price_cents, update.sale_starts_at_ms), (Some(7), Some(None)));
        assert_eq!(serde_json::from_str::<RestockRequest>(r#"{"quantity": 2.0}"#).expect("2.0").quantity, 2);
        for refused in [r#"{"quantity": 2.5}"#, r#"{"quantity": 1e19}"#, r#"{"quantity": 9223372036854775808}"#] {
            assert!(serde_json::from_str::<RestockRequest>(refused).is_err(), "{refused}");
        }
        assert!(serde_json::from_str::<UpdateProduct>(r#"{"price_cents": null}"#).is_err(), "null is not a price");
    }

    #[test]
    fn an_update_refuses_null_for_fields_that_cannot_be_cleared() {
        assert!(serde_json::from_str::<UpdateProduct>(r#"{"name": null}"#).is_err());
        assert!(serde_json::from_str::<UpdateProduct>(r#"{"stock": 5}"#).is_err());
        let empty = UpdateProduct::default();
        assert!(empty.apply(&product(None, None), 10).is_err());
    }

    #[test]
    fn an_update_checks_the_window_it_produces() {
        let update = UpdateProduct { sale_ends_at_ms: Some(Some(50)), ..UpdateProduct::default() };
        let refusal = update.apply(&product(Some(100), None), 10).expect_err("ends before the stored start");
        assert!(matches!(refusal, UpdateRefusal::Conflict(_)), "{refusal:?}");
        assert!(update.apply(&product(Some(40), None), 10).is_ok());
    }

    #[test]
    fn an_update_whose_own_window_is_inverted_is_invalid_whatever_is_stored() {
        let update =
            UpdateProduct { sale_starts_at_ms: Some(Some(90)), sale_ends_at_ms: Some(Some(50)), ..Default::default() };
        let refusal = update.apply(&product(None, None), 10).expect_err("ends before it starts");
        assert!(matches!(refusal, UpdateRefusal::Invalid(_)), "{refusal:?}");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  shoe ").as_deref(), Ok("shoe"));
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(validate_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(validate_name("a\nb").is_err());
    }

    #[test]
    fn only_the_default_first_page_is_cacheable() {
        assert!(ListQuery::default().is_cacheable());
        assert!(ListQuery { limit: Some(DEFAULT_PAGE_SIZE), after: None }.is_cacheable());
        assert!(!ListQuery { limit: Some(10), after: None }.is_cacheable());
        assert!(!ListQuery { limit: None, after: Some(Uuid::from_u128(3)) }.is_cacheable());
        assert_eq!(ListQuery { limit: Some(0), after: None }.page_size().ok(), None);
        assert_eq!(ListQuery { limit: Some(MAX_PAGE_SIZE + 1), after: None }.page_size().ok(), None);
    }
}
