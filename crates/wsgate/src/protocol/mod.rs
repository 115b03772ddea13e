//! The wire protocol, in one place: every frame wsgate reads or writes on a socket, every
//! machine-readable error code, every close code, and the JSON body of every HTTP refusal.
//!
//! A client (the browser client `/wsgate.js`, a test, another language's port) needs one page
//! to read; a server change that adds a frame or a code changes this module and nothing
//! else decides its spelling. Frames are typed ([`ClientFrame`], [`ServerFrame`]); codes are
//! enums ([`ErrorCode`], [`CloseReason`]) — no other module spells a close code number or
//! builds an error body by hand.

mod close;
mod error;
mod frames;

#[cfg(feature = "relay")]
pub(crate) use close::{CLOSE_WAIT, may_send};
pub use close::{CloseReason, close_socket};
pub(crate) use close::{NO_CLOSE_FRAME, close_label, close_then, code_of, drain};
pub use error::{ErrorBody, ErrorCode};
pub use frames::{ClientFrame, FrameError, ServerFrame, SessionFrame, is_refresh};
