//! Error answers of the API: the SPEC §9 code name and a one-line reason in a JSON body,
//! with an HTTP status that fits (docs/VIDAX_API.md has the table).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind};

/// An error answer (boxed: handlers return it in every `Result`).
#[derive(Debug)]
pub struct ApiError(Box<ApiErrorBody>);

/// What an error answer says.
#[derive(Debug)]
pub struct ApiErrorBody {
    pub status: StatusCode,
    pub error: Error,
    /// Validation problems, one per JSON path.
    pub problems: Option<Value>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl std::ops::Deref for ApiError {
    type Target = ApiErrorBody;
    fn deref(&self) -> &ApiErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorBody {
        &mut self.0
    }
}

/// The HTTP status an engine error answers with when nothing more specific applies.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Usage
        | ErrorKind::ValidationFailed
        | ErrorKind::InputNotFound
        | ErrorKind::UnsupportedFormat => StatusCode::BAD_REQUEST,
        ErrorKind::OutputExists | ErrorKind::ResumeInvalid | ErrorKind::WorkdirBusy => {
            StatusCode::CONFLICT
        }
        ErrorKind::ComfyuiUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ComfyuiTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::HashMismatch
        | ErrorKind::DownloadFailed
        | ErrorKind::PythonDependencyFailed
        | ErrorKind::ComfyuiBadResponse
        | ErrorKind::ComfyuiOutputsMissing
        | ErrorKind::ComfyuiFaceNotFound
        | ErrorKind::ComfyuiStartFailed => StatusCode::BAD_GATEWAY,
        ErrorKind::FfmpegFailed | ErrorKind::LipsyncFailed | ErrorKind::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // A request is not stopped by a signal; the server's own shutdown ends it.
        ErrorKind::Interrupted | ErrorKind::Terminated => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(ApiErrorBody {
            status,
            error: Error::new(kind, message),
            problems: None,
            retry_after: None,
        }))
    }

    /// A request that names input the server refuses to touch (outside the roots).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorKind::ValidationFailed, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorKind::InputNotFound, message)
    }

    pub fn bad_request(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, kind, message)
    }

    /// An error about the request's input (a job, its files): 400 with its code, unless it
    /// is the server's own fault.
    pub fn bad_input(e: Error) -> ApiError {
        let status = if e.kind == ErrorKind::Internal {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::from(e).with_status(status)
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(Box::new(ApiErrorBody {
            status: status_for(e.kind),
            error: e,
            problems: None,
            retry_after: None,
        }))
    }
}

/// The JSON body of an error answer.
pub fn error_body(e: &Error) -> Value {
    json!({"code": e.code(), "message": e.message, "hint": e.hint})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut body = error_body(&e.error);
        if let Some(p) = e.problems {
            body["problems"] = p;
        }
        let mut resp = (e.status, axum::Json(body)).into_response();
        if let Some(s) = e.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
