//! What a handler answers: a response header and its payload, ready for the connection that
//! received the request to encode under the request's id.
//!
//! A reply may be produced on another thread than the one holding the connection (the data node
//! forwards a request to the worker owning its range), so it is `Send` and can travel back
//! through a mailbox.

use bytes::Bytes;
use wire::msg::{ErrorResponse, Response};
use wire::ErrorCode;

/// The response header and its payload (batches for FETCH, echo bytes for PING).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Boxed: response headers vary a lot in size and replies travel through mailboxes.
    pub response: Box<Response>,
    pub payload: Bytes,
}

impl Reply {
    pub fn new(response: Response) -> Reply {
        Reply {
            response: Box::new(response),
            payload: Bytes::new(),
        }
    }

    pub fn with_payload(response: Response, payload: Bytes) -> Reply {
        Reply {
            response: Box::new(response),
            payload,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::new(Response::Error(ErrorResponse::new(code, message)))
    }

    pub fn error_with_detail(
        code: ErrorCode,
        detail: impl Into<u64>,
        message: impl Into<String>,
    ) -> Reply {
        Reply::new(Response::Error(
            ErrorResponse::new(code, message).with_detail(detail.into()),
        ))
    }

    pub fn is_error(&self) -> bool {
        matches!(*self.response, Response::Error(_))
    }
}
