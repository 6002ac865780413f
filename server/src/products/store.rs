//! Product records in MongoDB.

use mongodb::bson::doc;
use uuid::Uuid;

use super::model::Product;
use crate::db::PRODUCTS;
use crate::state::App;

/// The product with this id, deleted or not.
pub async fn find_product(app: &App, id: Uuid) -> anyhow::Result<Option<Product>> {
    Ok(app.db.collection::<Product>(PRODUCTS).find_one(doc! { "_id": id.to_string() }).await?)
}
