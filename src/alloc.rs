//! The allocator: mimalloc instead of glibc malloc.
//!
//! Calibration allocates and frees a batch of large activation tensors per
//! run on every thread. glibc keeps the freed memory fragmented, so peak RSS
//! kept growing with the number of batches (ResNet at 112x112: 264 MB at 32
//! samples, 337 MB at 512, 386 MB at 1536) and runs got slower (38 s at 1536
//! samples; mimalloc 27 s).
//!
//! One setting differs from mimalloc's defaults: no transparent huge pages
//! (the `no_thp` feature): every 2 MiB page the kernel hands out is zeroed
//! first, which was a tenth of a small run's time, and doubled the RSS of
//! small runs (digits: 41 -> 23 MB).
//!
//! Freed memory goes back to the OS after mimalloc's own purge delay (1 s).
//! A 10 ms delay was used before, to keep calibration's peak RSS from
//! growing with the batch count; it made every run of a batch fault in and
//! zero its tensors' pages again (a fifth of PP-OCRv4 det's compile time
//! was spent in the kernel). Measured side by side, alternating (release, 2
//! threads; median of 4, `MIMALLOC_PURGE_DELAY=10` against the default):
//! - PP-OCRv4 det compile 4.6 -> 3.4 s with `--method minmax`, 12.5 -> 10.3 s
//!   with the default `auto`; nudenet 4.6 -> 3.8 s and 14.1 -> 12.5 s;
//!   written models byte-identical;
//! - their peak RSS 189 -> 254 MB and 225 -> 290 MB (det), 195 -> 270 MB and
//!   244 -> 365 MB (nudenet);
//! - `quench calibrate` on the ResNet-ish CNN at 112x112, 256 samples: 4.2-5.2
//!   -> 3.1-3.2 s; peak RSS at 512 samples 275 -> 306-319 MB (32 vs 512
//!   samples: 1.06-1.10x -> 1.11-1.20x).
//!
//! `MIMALLOC_PURGE_DELAY` (milliseconds) still sets it, e.g. 10 where memory
//! is tighter than time.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
