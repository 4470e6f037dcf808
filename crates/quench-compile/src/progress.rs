//! How long phases report progress to whoever drives the compile (a
//! terminal progress bar, a Python callback, nothing).

/// Where a long phase reports how far it got. Every method has a default
/// that does nothing ([`Silent`]).
pub trait Progress: Sync {
    /// A phase with `total` samples starts (`what` names it).
    fn samples_start(&self, _what: &str, _total: u64) {}
    /// `n` more samples are done.
    fn samples_done(&self, _n: u64) {}
    /// The phase ended.
    fn samples_end(&self) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}
