//! Which core a thread runs on (`--cores`).
//!
//! This module owns pinning: the receive and build stages and the dump's
//! threads pin themselves through [`pin_current`], which says in the log
//! where each went. It never decides which core anything gets: the
//! pipeline does, from `--cores`.

use tracing::{info, warn};

/// Pins the calling thread to `core`, if one is given, and logs the outcome
/// naming `what` runs there; a thread that cannot be pinned runs unpinned.
pub fn pin_current(core: Option<usize>, what: &str) {
    let Some(id) = core else { return };
    if core_affinity::set_for_current(core_affinity::CoreId { id }) {
        info!("{what} pinned to core {id}");
    } else {
        warn!("could not pin {what} to core {id}: running unpinned");
    }
}

/// Keeps the calling thread off the stages' cores `[a, b]` (when pinned):
/// it may run on any other core. With no other core it stays where it is.
pub fn avoid_current(stages: Option<[usize; 2]>) {
    let Some(stages) = stages else { return };
    let others: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !stages.contains(c))
        .collect();
    if others.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is a plain bit set (all-zero is empty); CPU_SET
    // writes within it for ids below CPU_SETSIZE (checked); the call reads
    // the set we pass for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in others.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(*c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
