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
