//! Where each module and pixel sits on the camera image (PROTOCOL.md §8).
//!
//! The default geometry, the same facts as the Python tools'
//! `camera_geometry.json` (a test checks the two agree): 32 modules of 8 × 8
//! pixels on a 6 × 6 grid of module positions with the corners empty,
//! placed row by row from the top left ("module placement: default", the
//! real mapping is not public), and the successor's pixel order inside a
//! module: the pixel at row `k / 8`, column `k % 8` shows value
//! `SSL2COLROW[k]`.

use crate::packet::{N_MODULES, N_PIXELS};

/// The camera image is `IMAGE × IMAGE` pixels.
pub const IMAGE: usize = 48;
/// Pixels per module side.
pub const MODULE_SIDE: usize = 8;

/// `[row, column]` of each module on the 6 × 6 grid of module positions.
#[rustfmt::skip]
pub const MODULE_POSITIONS: [[u8; 2]; N_MODULES] = [
    [0, 1], [0, 2], [0, 3], [0, 4],
    [1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [1, 5],
    [2, 0], [2, 1], [2, 2], [2, 3], [2, 4], [2, 5],
    [3, 0], [3, 1], [3, 2], [3, 3], [3, 4], [3, 5],
    [4, 0], [4, 1], [4, 2], [4, 3], [4, 4], [4, 5],
    [5, 1], [5, 2], [5, 3], [5, 4],
];

/// The value shown at pixel `k` (row `k / 8`, column `k % 8`) of a module.
pub const SSL2COLROW: [u8; N_PIXELS] = [
    8, 1, 5, 6, 41, 43, 51, 47, 11, 14, 13, 7, 44, 36, 42, 46, 12, 2, 4, 15, 38, 37, 33, 45, 10,
    16, 9, 19, 40, 39, 34, 48, 26, 28, 20, 31, 56, 54, 35, 63, 17, 3, 18, 25, 62, 53, 32, 61, 27,
    30, 21, 22, 58, 52, 59, 55, 24, 0, 29, 23, 49, 57, 50, 60,
];

/// The module whose pixels cover image cell `(row, col)` (None: a corner).
pub fn module_at(row: usize, col: usize) -> Option<usize> {
    let (r, c) = ((row / MODULE_SIDE) as u8, (col / MODULE_SIDE) as u8);
    MODULE_POSITIONS.iter().position(|p| *p == [r, c])
}

/// What image cell `(row, col)` shows: `(module, value index)`, None in a corner.
pub fn pixel_at(row: usize, col: usize) -> Option<(usize, usize)> {
    let m = module_at(row, col)?;
    let k = (row % MODULE_SIDE) * MODULE_SIDE + col % MODULE_SIDE;
    Some((m, SSL2COLROW[k] as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_every_module_has_exactly_one_pixel() {
        let mut seen = vec![[0u8; N_PIXELS]; N_MODULES];
        for r in 0..IMAGE {
            for c in 0..IMAGE {
                if let Some((m, j)) = pixel_at(r, c) {
                    seen[m][j] += 1;
                }
            }
        }
        assert!(seen.iter().all(|m| m.iter().all(|&n| n == 1)));
        assert_eq!(module_at(0, 0), None, "a corner");
        assert_eq!(module_at(0, 8), Some(0));
        assert_eq!(module_at(47, 47), None);
    }
}
