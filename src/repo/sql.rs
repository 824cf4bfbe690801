//! Dynamic SQL: a statement built piece by piece with `$n` placeholders, and its parameters.

use uuid::Uuid;

#[derive(Debug, Clone)]
pub(crate) enum Param {
    Uuid(Uuid),
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Float(f64),
    OptFloat(Option<f64>),
    OptBool(Option<bool>),
}

#[derive(Debug, Default)]
pub(crate) struct SqlBuilder {
    pub sql: String,
    pub params: Vec<Param>,
}

impl SqlBuilder {
    pub fn new(sql: &str) -> Self {
        Self { sql: sql.to_string(), params: vec![] }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `p`.
    pub fn bind(&mut self, p: Param) -> &mut Self {
        self.params.push(p);
        self.sql.push_str(&format!("${}", self.params.len()));
        self
    }

    /// Appends `($a, $b, ...)`.
    pub fn list(&mut self, items: impl IntoIterator<Item = Param>) -> &mut Self {
        self.sql.push('(');
        for (i, p) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(p);
        }
        self.sql.push(')');
        self
    }
}

/// Binds a builder's parameters onto a query, on either backend.
macro_rules! bind_params {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                $crate::repo::sql::Param::Uuid(v) => q.bind(*v),
                $crate::repo::sql::Param::Text(v) => q.bind(v.as_str()),
                $crate::repo::sql::Param::OptText(v) => q.bind(v.as_deref()),
                $crate::repo::sql::Param::Int(v) => q.bind(*v),
                $crate::repo::sql::Param::Float(v) => q.bind(*v),
                $crate::repo::sql::Param::OptFloat(v) => q.bind(*v),
                $crate::repo::sql::Param::OptBool(v) => q.bind(*v),
            };
        }
        q
    }};
}
pub(crate) use bind_params;

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
