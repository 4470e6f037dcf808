//! The allocator: mimalloc instead of glibc malloc, tuned for calibration.
//!
//! Calibration allocates and frees a batch of large activation tensors per
//! run on every thread. glibc keeps the freed memory fragmented, so peak RSS
//! kept growing with the number of batches (ResNet at 112x112: 264 MB at 32
//! samples, 337 MB at 512, 386 MB at 1536) and runs got slower (38 s at 1536
//! samples; mimalloc 27 s).
//!
//! Two settings differ from mimalloc's defaults:
//! - no transparent huge pages (the `no_thp` feature): every 2 MiB page the
//!   kernel hands out is zeroed first, which was a tenth of a small run's
//!   time, and doubled the RSS of small runs (digits: 41 -> 23 MB);
//! - freed memory goes back to the OS after 10 ms instead of mimalloc 3's
//!   1 s ([`tune`]), so that the memory of finished batches is reused or
//!   returned rather than accumulated: the same ResNet, 32 vs 512 samples,
//!   277 / 308 MB before, 238 / 256 MB after, at the same speed.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default there, in milliseconds.
const PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Sets the purge delay to 10 ms, unless it is not at mimalloc 3's default
/// (the user set `MIMALLOC_PURGE_DELAY`, or another mimalloc version with
/// another option table is linked: then nothing is changed).
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: both functions only read or store an integer in mimalloc's
    // option table; they take no pointers and are thread-safe.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 10);
        }
    }
}
