//! Typed column access that reads the same on both backends' rows.

use sqlx::Row;
use uuid::Uuid;

pub(crate) trait RowExt {
    fn uuid(&self, col: &str) -> sqlx::Result<Uuid>;
    fn opt_uuid(&self, col: &str) -> sqlx::Result<Option<Uuid>>;
    fn int(&self, col: &str) -> sqlx::Result<i64>;
    fn opt_int(&self, col: &str) -> sqlx::Result<Option<i64>>;
    fn text(&self, col: &str) -> sqlx::Result<String>;
    fn opt_text(&self, col: &str) -> sqlx::Result<Option<String>>;
    fn strings(&self, col: &str) -> sqlx::Result<Vec<String>>;
    fn boolean(&self, col: &str) -> sqlx::Result<bool>;
    fn opt_bool(&self, col: &str) -> sqlx::Result<Option<bool>>;
    fn opt_float(&self, col: &str) -> sqlx::Result<Option<f64>>;
    fn json<T: serde::de::DeserializeOwned>(&self, col: &str) -> sqlx::Result<T>;
    fn opt_json<T: serde::de::DeserializeOwned>(&self, col: &str) -> sqlx::Result<Option<T>>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn uuid(&self, col: &str) -> sqlx::Result<Uuid> {
                self.try_get(col)
            }
            fn opt_uuid(&self, col: &str) -> sqlx::Result<Option<Uuid>> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> sqlx::Result<i64> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> sqlx::Result<Option<i64>> {
                self.try_get(col)
            }
            fn text(&self, col: &str) -> sqlx::Result<String> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> sqlx::Result<Option<String>> {
                self.try_get(col)
            }
            fn strings(&self, col: &str) -> sqlx::Result<Vec<String>> {
                self.try_get::<sqlx::types::Json<Vec<String>>, _>(col).map(|j| j.0)
            }
            fn boolean(&self, col: &str) -> sqlx::Result<bool> {
                self.try_get(col)
            }
            fn opt_bool(&self, col: &str) -> sqlx::Result<Option<bool>> {
                self.try_get(col)
            }
            fn opt_float(&self, col: &str) -> sqlx::Result<Option<f64>> {
                self.try_get(col)
            }
            fn json<T: serde::de::DeserializeOwned>(&self, col: &str) -> sqlx::Result<T> {
                self.try_get::<sqlx::types::Json<T>, _>(col).map(|j| j.0)
            }
            fn opt_json<T: serde::de::DeserializeOwned>(&self, col: &str) -> sqlx::Result<Option<T>> {
                self.try_get::<Option<sqlx::types::Json<T>>, _>(col).map(|j| j.map(|j| j.0))
            }
        }
    };
}

impl_row_ext!(sqlx::postgres::PgRow);
impl_row_ext!(sqlx::sqlite::SqliteRow);
