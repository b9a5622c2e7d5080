"""Tiled (slide) inference: an image larger than a tile, predicted tile by tile.

As mmsegmentation's slide inference: tiles of `tile` (H, W) step by (1 - overlap) of a tile,
the last row and column of tiles shifted back to end at the image's edge; each tile is
predicted as a whole image of its size (its own logits, resized to it, softmax) and the
probabilities of overlapping tiles are averaged. An image no larger than a tile in both
sides is predicted whole, exactly as without tiling; a side shorter than the tile gives
tiles of that side's length.

Tiles run a row at a time (`batch_size` tiles through the network together) and a band of
rows is finished as soon as no later tile covers it, so that memory holds one row of tiles'
probabilities, not the whole image's.
"""

import numpy as np

from deeplab_resnet import settings as rules

DEFAULT_OVERLAP = 1.0 / 3.0


def check_tile(tile, overlap):
    """`tile` as a pair of ints (or None), checked with `overlap` (0 <= F < 1).

    Raises:
        SettingError naming "tile" or "tile_overlap" (`deeplab_resnet.settings`' rules).
    """
    rules.SIZE_PAIR.or_none().check(tile, "tile")
    rules.FRACTION.check(overlap, "tile_overlap")
    return None if tile is None else tuple(int(t) for t in tile)


def starts(size, tile, stride):
    """Tile origins along one axis: every `stride`, the last one ending at `size`."""
    if size <= tile:
        return [0]
    count = (size - tile + stride - 1) // stride + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


class Tiler:
    """Averaged tile probabilities of large images, band by band.

    Args:
        probabilities_many: list of HxWx3 uint8 images of one size -> list of their
            HxWxC float32 probabilities (e.g. a predictor's network without CRF).
        tile: (height, width).
        overlap: fraction of a tile shared with the next (default 1/3).
        batch_size: tiles run through the network together.
    """

    def __init__(self, probabilities_many, tile, overlap=DEFAULT_OVERLAP, batch_size=1):
        self.probabilities_many = probabilities_many
        self.tile = check_tile(tile, overlap)
        self.overlap = float(overlap)
        self.batch_size = max(1, int(batch_size))

    def covers(self, image):
        """Whether `image` fits in one tile (and is therefore predicted whole)."""
        return image.shape[0] <= self.tile[0] and image.shape[1] <= self.tile[1]

    def _row(self, image, y, th, tw, xs):
        tiles = [image[y:y + th, x:x + tw] for x in xs]
        out = []
        for i in range(0, len(tiles), self.batch_size):
            out += self.probabilities_many(tiles[i:i + self.batch_size])
        return out

    def bands(self, image):
        """Yields (first row, averaged probabilities of rows [first, first + n)) top to bottom
        for an image larger than a tile."""
        height, width = image.shape[:2]
        th, tw = min(self.tile[0], height), min(self.tile[1], width)
        steps = [max(1, int(round(t * (1.0 - self.overlap)))) for t in (th, tw)]
        ys, xs = starts(height, th, steps[0]), starts(width, tw, steps[1])
        base, sums, counts = 0, None, None
        for i, y in enumerate(ys):
            row = self._row(image, y, th, tw, xs)
            if sums is None:
                sums = np.zeros((0, width, row[0].shape[-1]), np.float32)
                counts = np.zeros((0, width), np.float32)
            grow = y + th - base - sums.shape[0]
            if grow > 0:
                sums = np.concatenate([sums, np.zeros((grow,) + sums.shape[1:], np.float32)])
                counts = np.concatenate([counts, np.zeros((grow, width), np.float32)])
            top = y - base
            for x, probabilities in zip(xs, row):
                sums[top:top + th, x:x + tw] += probabilities
                counts[top:top + th, x:x + tw] += 1.0
            done = (ys[i + 1] if i + 1 < len(ys) else height) - base
            yield base, sums[:done] / counts[:done, :, None]
            sums, counts, base = sums[done:], counts[done:], base + done

    def probabilities(self, image):
        """HxWxC float32 averaged probabilities of an image larger than a tile."""
        out = None
        for first, band in self.bands(image):
            if out is None:
                out = np.empty(image.shape[:2] + band.shape[-1:], np.float32)
            out[first:first + band.shape[0]] = band
        return out

    def labels(self, image):
        """HxW int32 argmax of the averaged probabilities, holding one band at a time."""
        labels = np.empty(image.shape[:2], np.int32)
        for first, band in self.bands(image):
            labels[first:first + band.shape[0]] = band.argmax(axis=-1)
        return labels
