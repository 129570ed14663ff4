//! Why a federation request failed.

/// Why a federation request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FederationError {
    #[error("request to the peer failed: {0}")]
    Call(#[from] cairn_api::CallError),
    #[error("the peer's receipt is unacceptable: {0}")]
    BadReceipt(String),
    #[error("the peer could not produce what it receipted: {0}")]
    CheckFailed(String),
    #[error("reconciliation failed: {0}")]
    Reconcile(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Local(String),
}
