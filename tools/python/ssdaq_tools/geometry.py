"""Where each module and pixel of CHEC-S sits on the camera image.

The facts live in one data file, camera_geometry.json (PROTOCOL.md section 8),
which a user replaces with their telescope's own: module_positions[m] is the
[row, column] of module m on the grid of module positions (row 0 at the top),
and ssl2colrow maps the 64 slow-signal values of a module to its pixels:
colrow = values[ssl2colrow], colrow[k] at row k // 8, column k % 8.
"""

import json
import os

import numpy as np

DEFAULT_FILE = os.path.join(os.path.dirname(__file__), "camera_geometry.json")
N_MODULES = 32
N_PIXELS = 64


class Geometry:
    """A camera geometry: module placement and the pixel order in a module."""

    def __init__(self, positions, ssl2colrow, grid=(6, 6), module_pixels=(8, 8), placement="default"):
        self.positions = [tuple(p) for p in positions]
        self.ssl2colrow = np.asarray(ssl2colrow, dtype=int)
        self.grid = tuple(grid)
        self.module_pixels = tuple(module_pixels)
        self.placement = placement
        mr, mc = self.module_pixels
        if len(self.positions) != N_MODULES:
            raise ValueError("module_positions must place all %d modules" % N_MODULES)
        if sorted(self.ssl2colrow.tolist()) != list(range(N_PIXELS)) or mr * mc != N_PIXELS:
            raise ValueError("ssl2colrow must be a permutation of 0..63 onto an 8 x 8 module")
        if len(set(self.positions)) != N_MODULES or any(
            not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]) for r, c in self.positions
        ):
            raise ValueError("module_positions must be distinct cells of the %d x %d grid" % self.grid)

    @classmethod
    def load(cls, path=None):
        """The geometry in `path` (default: the bundled camera_geometry.json)."""
        with open(path or DEFAULT_FILE) as f:
            g = json.load(f)
        return cls(
            g["module_positions"],
            g["ssl2colrow"],
            g.get("module_grid", (6, 6)),
            g.get("module_pixels", (8, 8)),
            g.get("placement", os.path.basename(path) if path else "default"),
        )

    @property
    def shape(self):
        """(rows, columns) of the camera image in pixels: 48 x 48 for CHEC-S."""
        return (self.grid[0] * self.module_pixels[0], self.grid[1] * self.module_pixels[1])

    def module_origin(self, module):
        """(row, column) of the top-left pixel of `module` in the image."""
        r, c = self.positions[module]
        return (r * self.module_pixels[0], c * self.module_pixels[1])

    def image(self, data):
        """The camera image of `data` (32 x 64 values, row = module): a 48 x 48
        float array, NaN where there is no pixel or the module is missing."""
        data = np.asarray(data, dtype=float).reshape(N_MODULES, N_PIXELS)
        img = np.full(self.shape, np.nan)
        mr, mc = self.module_pixels
        for m in range(N_MODULES):
            r0, c0 = self.module_origin(m)
            img[r0 : r0 + mr, c0 : c0 + mc] = data[m][self.ssl2colrow].reshape(mr, mc)
        return img

    def empty_cells(self):
        """Grid cells with no module (the corners for CHEC-S)."""
        used = set(self.positions)
        return [(r, c) for r in range(self.grid[0]) for c in range(self.grid[1]) if (r, c) not in used]
