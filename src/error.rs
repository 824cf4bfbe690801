use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::repo::RepoError;

tokio::task_local! {
    /// The id of the request being served; set by the request middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub error: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { field: field.into(), error: error.into() }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `not_found`.
    pub error: String,
    pub message: String,
    pub status_code: u16,
    /// Present on 422 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_errors: Option<Vec<FieldError>>,
    /// Seconds to wait: on 429, and on a 503 that clears by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    pub request_id: String,
}

/// Every failure the API reports. Internal causes are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    /// A claim (an unverified session that named an existing address) asked for what needs proof.
    #[error("this needs a session verified with a sign-in code")]
    VerificationRequired,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The body is larger than the route takes (`limit`: in words, like "1 MiB").
    #[error("the request body is larger than {limit}")]
    PayloadTooLarge { limit: &'static str },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    Validation { message: String, errors: Vec<FieldError> },
    #[error("too many requests")]
    TooManyRequests { retry_after: u64 },
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// The database kept giving this unit of work up for concurrent ones (after retries).
    #[error("the server is busy with concurrent changes to the same records; try again")]
    Contention,
    /// An upstream provider (Stripe) failed or timed out.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized { code: "unauthorized", message: message.into() }
    }

    pub fn invalid(field: impl Into<String>, error: impl Into<String>) -> Self {
        let field = field.into();
        let error = error.into();
        Self::Validation { message: format!("{field}: {error}"), errors: vec![FieldError { field, error }] }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = errors.iter().map(|e| format!("{}: {}", e.field, e.error)).collect::<Vec<_>>().join(", ");
        Self::Validation { message, errors }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::VerificationRequired => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::Contention => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. }
            | Self::BadGateway { code, .. } => code,
            Self::Forbidden(_) => "forbidden",
            Self::Contention => "contention",
            Self::VerificationRequired => "verification_required",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Validation { .. } => "validation_failed",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// The 409 of each unique constraint (by its Postgres name; see `repo::UNIQUE_CONSTRAINTS`).
fn unique_conflict(constraint: &str) -> AppError {
    let (code, message) = match constraint {
        "accounts_email_key_unique" => ("email_taken", "an account with this email exists"),
        "profiles_email_unique" => ("email_taken", "another profile of this store has this email"),
        "taxonomies_key_unique" => ("key_taken", "another taxonomy of this store has this key"),
        "email_templates_key_unique" => ("key_taken", "another email template of this store has this key"),
        "audiences_key_unique" => ("key_taken", "another audience of this store has this key"),
        "segments_key" => ("key_taken", "another segment of this store has this key"),
        _ => ("conflict", "a concurrent request changed the same record; try again"),
    };
    AppError::Conflict { code, message: message.into() }
}

/// Constraint violations are mapped here, once, by constraint; everything else unexpected is a 500.
impl From<RepoError> for AppError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unique(constraint) => unique_conflict(constraint),
            RepoError::MissingReference => Self::Conflict {
                code: "concurrent_change",
                message: "a record this request refers to was changed or removed meanwhile; try again".into(),
            },
            RepoError::Contention(cause) => {
                tracing::warn!(error = %cause, "transaction given up for a concurrent one");
                Self::Contention
            }
            RepoError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::Unavailable {
                    code: "database_unavailable",
                    message: "the database is not reachable; try again".into(),
                }
            }
            RepoError::Db(_) => Self::Internal(e.into()),
        }
    }
}

/// Builds an error body for a status that no handler produced (404 route, 405, 408...).
pub fn body_for_status(status: StatusCode, request_id: String) -> ErrorBody {
    let (code, message) = match status.as_u16() {
        400 => ("bad_request", "the request could not be understood"),
        401 => ("unauthorized", "a valid bearer credential is required"),
        404 => ("not_found", "no such route"),
        405 => ("method_not_allowed", "this route does not accept that method"),
        408 => ("request_timeout", "the request took too long"),
        413 => ("payload_too_large", "the request body is larger than 1 MiB"),
        415 => ("unsupported_media_type", "send a JSON body with content-type application/json"),
        s if s >= 500 => ("internal_error", "internal error"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    ErrorBody {
        error: code.into(),
        message: message.into(),
        status_code: status.as_u16(),
        validation_errors: None,
        retry_after: None,
        request_id,
    }
}

pub fn error_response(status: StatusCode, body: &ErrorBody) -> Response {
    (status, axum::Json(body)).into_response()
}

/// How long a client should wait before a transient 503 is worth retrying: the pool reconnects
/// and contention clears within about a second.
pub const TRANSIENT_RETRY_AFTER_SECS: u64 = 1;

impl AppError {
    /// `Retry-After` (and `retry_after` in the body): the limit's wait on a 429; a short wait on a
    /// 503 that goes away by itself (not on `payments_not_configured`, which waits for an operator).
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after } => Some(*retry_after),
            Self::Unavailable { code: "database_unavailable" | "not_ready", .. } | Self::Contention => {
                Some(TRANSIENT_RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = current_request_id();
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(request_id = %request_id, error = %format_args!("{cause:#}"), "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let retry_after = self.retry_after();
        let validation_errors = match &self {
            Self::Validation { errors, .. } => Some(errors.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: self.code().into(),
            message,
            status_code: status.as_u16(),
            validation_errors,
            retry_after,
            request_id,
        };
        let mut response = error_response(status, &body);
        let headers = response.headers_mut();
        if let Self::Unauthorized { .. } = &self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;
