"""Where the frames of a tiled image lie: a whole-slide image's frames are tiles of one
picture, not moments of a loop.

A VL Whole Slide Microscopy level is stored as tiles (DimensionOrganizationType
``TILED_FULL``: row by row, then focal plane, then optical path; ``TILED_SPARSE``: each
frame's position in its functional groups). OCR reads each plane of the total pixel
matrix in windows of a tile's size assembled from the tiles: on the tiles' own grid and
on the grids shifted by half a tile across, down and both, so a line that crosses a
tile's edge or corner lies whole in some window (the detector is surer of small text in
a tile-sized window than in a larger one of busy tissue). A box is blanked only in the
tiles under it (blanking it in every tile, as in a cine loop, would bar the whole slide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_deid.dicom.reader import int_value, text_value

from .ocr import Box

__all__ = ["Tile", "tile_layout", "window_starts"]

_DIMENSION_ORGANIZATION = 0x00209311
_TOTAL_COLS, _TOTAL_ROWS = 0x00480006, 0x00480007


@dataclass(frozen=True)
class Tile:
    """One frame's place: its plane (focal plane and optical path) and the total pixel
    matrix row and column of its first pixel (0-based)."""

    plane: int
    row: int
    col: int

    def local(self, box: Box, rows: int, cols: int) -> Box | None:
        """``box`` (in its plane's coordinates) as it falls in this tile, if it does."""
        return Box(box.x0 - self.col, box.y0 - self.row, box.x1 - self.col,
                   box.y1 - self.row).clip(rows, cols)


def tile_layout(ds: Dataset, frames: int, rows: int, cols: int) -> list[Tile] | None:
    """Each frame's tile, or None when the frames are not tiles of one image (or say so
    inconsistently: then they are treated as a loop, every box blanked in every frame)."""
    if frames < 2:
        return None
    organisation = text_value(ds, _DIMENSION_ORGANIZATION).strip().upper()
    if organisation == "TILED_FULL":
        total_cols, total_rows = int_value(ds, _TOTAL_COLS), int_value(ds, _TOTAL_ROWS)
        if not (total_cols and total_rows and rows and cols):
            return None
        across, down = math.ceil(total_cols / cols), math.ceil(total_rows / rows)
        if frames % (across * down):
            return None
        return [Tile(i // (across * down), i % (across * down) // across * rows,
                     i % across * cols) for i in range(frames)]
    if organisation == "TILED_SPARSE":
        return _sparse(ds, frames)
    return None


def _sparse(ds: Dataset, frames: int) -> list[Tile] | None:
    """TILED_SPARSE: positions from each frame's Plane Position (Slide), planes told apart
    by focal depth and optical path."""
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if groups is None or len(groups) != frames:
        return None
    planes: dict[tuple[str, str], int] = {}
    tiles = []
    for item in groups:
        position = item.get("PlanePositionSlideSequence")
        if not position:
            return None
        pos = position[0]
        try:
            row = int(pos.RowPositionInTotalImagePixelMatrix) - 1
            col = int(pos.ColumnPositionInTotalImagePixelMatrix) - 1
        except (AttributeError, TypeError, ValueError):
            return None
        path = item.get("OpticalPathIdentificationSequence")
        key = (str(pos.get("ZOffsetInSlideCoordinateSystem", "")),
               str(path[0].get("OpticalPathIdentifier", "")) if path else "")
        tiles.append(Tile(planes.setdefault(key, len(planes)), row, col))
    return tiles


def window_starts(size: int, step: int) -> list[int]:
    """Where the windows of side ``step`` along one side of a plane of ``size`` start: at
    each tile, and half a tile later (over each edge between two tiles)."""
    return sorted({*range(0, size, step), *range(step // 2, size - step // 2, step)})
