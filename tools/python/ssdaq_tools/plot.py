"""Camera images of slow-signal data: `ssdaq-plot FILE -o camera.png`.

Draws one event, or the mean of a range of events, on the camera's
48 x 48 pixel grid (geometry.py): modules outlined and numbered, a missing
module grey, the empty corners blank, a colour bar in mV. The module
placement comes from the geometry file (--geometry; default: the bundled
one) and is named on every image.
"""

import argparse
import sys
import warnings

import numpy as np

from .geometry import Geometry
from .reader import SSFile

#: Figure size in pixels, and where the camera is drawn on it, as fractions
#: (left, bottom, width, height): fixed, so a pixel of the image is found at
#: a known place in the PNG (see `png_pixel`).
FIG_PX = (800, 700)
DPI = 100
CAMERA_AXES = (0.04, 0.08, 0.72, 0.72 * FIG_PX[0] / FIG_PX[1])
COLORBAR_AXES = (0.80, 0.08, 0.03, 0.72 * FIG_PX[0] / FIG_PX[1])
MISSING_COLOUR = "#b0b0b0"


def png_pixel(geometry, row, col):
    """(x, y) in the PNG of the centre of camera pixel (row, col), y from the top."""
    left, bottom, width, height = CAMERA_AXES
    rows, cols = geometry.shape
    x = (left + width * (col + 0.5) / cols) * FIG_PX[0]
    y = (1 - (bottom + height * (1 - (row + 0.5) / rows))) * FIG_PX[1]
    return int(x), int(y)


def draw(data, geometry, path, title="", vmin=None, vmax=None):
    """Saves the camera image of `data` (32 x 64 mV, NaN rows missing) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = geometry.image(data)
    fig = plt.figure(figsize=(FIG_PX[0] / DPI, FIG_PX[1] / DPI), dpi=DPI)
    ax = fig.add_axes(CAMERA_AXES)
    cax = fig.add_axes(COLORBAR_AXES)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad(MISSING_COLOUR)
    rows, cols = geometry.shape
    finite = img[np.isfinite(img)]
    if vmin is None and finite.size:
        vmin = float(finite.min())
    if vmax is None and finite.size:
        vmax = float(finite.max())
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, extent=(0, cols, rows, 0),
                   interpolation="nearest", aspect="auto")
    mr, mc = geometry.module_pixels
    for r, c in geometry.empty_cells():  # no module there: blank, not "missing"
        ax.add_patch(Rectangle((c * mc, r * mr), mc, mr, facecolor="white", edgecolor="none"))
    present = ~np.isnan(np.asarray(data, dtype=float).reshape(32, 64)[:, 0])
    for m in range(32):
        r0, c0 = geometry.module_origin(m)
        ax.add_patch(Rectangle((c0, r0), mc, mr, fill=False, edgecolor="black", linewidth=1))
        ax.text(c0 + 0.4, r0 + 1.4, str(m), fontsize=7, color="white" if present[m] else "black")
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_axis_off()
    fig.colorbar(im, cax=cax, label="mV")
    fig.text(0.04, 0.02, "module placement: %s    grey: module missing" % geometry.placement, fontsize=8)
    if title:
        fig.text(0.04, 0.97, title, fontsize=10, va="top")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def parse_range(s):
    a, sep, b = s.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError("%r is not a range A:B of event indices" % s)
    try:
        return (int(a) if a else 0, int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a range A:B of event indices" % s) from None


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="ssdaq-plot",
        description="Draw an event, or the mean of events, of an ssdaq HDF5 file as a camera image.",
    )
    p.add_argument("file", help="an HDF5 file written by ssdaq-write or ssdaq-replay --hdf5")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--event", type=int, default=0, help="index of the event in the file (default 0)")
    g.add_argument("--mean", type=parse_range, metavar="A:B", help="mean of the events A..B-1 (indices)")
    p.add_argument("--geometry", help="a camera geometry JSON file (default: the bundled one)")
    p.add_argument("--vmin", type=float)
    p.add_argument("--vmax", type=float)
    args = p.parse_args(argv)
    try:
        geometry = Geometry.load(args.geometry)
        with SSFile(args.file) as f:
            n = len(f)
            if n == 0:
                print("ssdaq-plot: %s holds no events yet" % args.file, file=sys.stderr)
                return 1
            if args.mean is not None:
                a, b = args.mean
                b = n if b is None else min(b, n)
                if not 0 <= a < b:
                    print("ssdaq-plot: --mean %d:%d selects no events of the %d in the file" % (a, b, n),
                          file=sys.stderr)
                    return 2
                with warnings.catch_warnings():  # a module missing from all: NaN, drawn grey
                    warnings.simplefilter("ignore", category=RuntimeWarning)
                    data = np.nanmean(f.data(a, b), axis=0)
                title = "%s: mean of events %d..%d (%d events)" % (args.file, a, b - 1, b - a)
            else:
                if not -n <= args.event < n:
                    print("ssdaq-plot: --event %d: the file holds %d events" % (args.event, n), file=sys.stderr)
                    return 2
                ev = next(f._events(f.read(args.event, args.event + 1 if args.event != -1 else None)))
                data = ev.data
                title = "%s: event %d, timestamp %d ns" % (args.file, ev.number, ev.timestamp)
    except (OSError, ValueError, KeyError) as e:
        print("ssdaq-plot: %s" % e, file=sys.stderr)
        return 1
    draw(data, geometry, args.output, title, args.vmin, args.vmax)
    print("ssdaq-plot: wrote %s" % args.output, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
