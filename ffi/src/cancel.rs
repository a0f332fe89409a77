//! `fewstep_cancel_token`: a flag another thread (a UI thread) sets to stop
//! a running `fewstep_generate_*` call within one operator.

use fewstep_runtime::CancelToken;

use super::{Failure, fewstep_status, guard};

/// A cancel token. Opaque; thread-safe; create with
/// `fewstep_cancel_token_new`, free with `fewstep_cancel_token_free` after
/// every call that uses it has returned.
#[derive(Debug)]
pub struct fewstep_cancel_token {
    inner: CancelToken,
}

impl fewstep_cancel_token {
    pub(crate) fn token(&self) -> &CancelToken {
        &self.inner
    }
}

/// A new token, not cancelled. Never NULL. Put it in
/// `fewstep_request.cancel`; one token may serve several calls (all stop
/// when it is cancelled).
#[unsafe(no_mangle)]
pub extern "C" fn fewstep_cancel_token_new() -> *mut fewstep_cancel_token {
    Box::into_raw(Box::new(fewstep_cancel_token {
        inner: CancelToken::new(),
    }))
}

/// Cancels every call using `token`, from any thread: each stops at the
/// next operator of the network evaluation in progress (about 1.5 ms on
/// the benchmark U-Net, whose evaluation takes 20 ms) and returns
/// `FEWSTEP_CANCELLED` with the last completed step's estimate in its
/// buffer (or, before its first step completed, with no estimate). A
/// cancelled token stays cancelled.
///
/// # Safety
/// `token` NULL or a live token.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_cancel_token_cancel(
    token: *const fewstep_cancel_token,
) -> fewstep_status {
    guard(|| {
        // SAFETY: NULL or a live token, per the contract.
        let token = unsafe { token.as_ref() }.ok_or_else(|| Failure::null("token"))?;
        token.inner.cancel();
        Ok(fewstep_status::FEWSTEP_OK)
    })
}

/// Frees a token (NULL is a no-op). Only after every call using it has
/// returned.
///
/// # Safety
/// `token` NULL or a token from `fewstep_cancel_token_new`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_cancel_token_free(token: *mut fewstep_cancel_token) {
    if !token.is_null() {
        // SAFETY: from Box::into_raw, once, per the contract.
        drop(unsafe { Box::from_raw(token) });
    }
}
