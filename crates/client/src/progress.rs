//! Progress reporting for long transfers, without tying the library to a
//! terminal: the CLI draws bars, an embedding program does what it likes.

/// Receives progress of one long operation at a time.
pub trait Progress: Send + Sync {
    /// A phase begins (`"sealing"`, `"uploading"`, …) with `total` bytes of
    /// work expected.
    fn begin(&self, phase: &str, total: u64);
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, bytes: u64);
    /// The current phase is over.
    fn end(&self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
