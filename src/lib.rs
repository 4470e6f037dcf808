//! The `quench` package's library target: what the command line and the
//! benchmarks share beyond the driver (`quench_compile`). Only the
//! process-wide allocator lives here; everything else is in `crates/`.

pub mod alloc;
