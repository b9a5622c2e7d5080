"""Pictures the commands draw: panels in titled columns over a legend of class colours
(demo.py's grid), and the legend alone (inference.py --legend)."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deeplab_resnet.data.datasets import VOC_PALETTE

GAP = 4
SWATCH = 12


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom


def picture(rows, titles, legend, palette=None):
    """Rows of RGB panels in aligned columns, a title over each column and a colour legend.

    Args:
        rows: lists of HxWx3 uint8 panels, one per column (a row's panels equally tall).
        titles: one title per column.
        legend: [(label value, name)]: swatches in the colour of each value.
        palette: 256x3 uint8 colours of the label values (default VOC's).
    Returns:
        HxWx3 uint8: title band, the rows, the legend band, on white.
    """
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = max(_text_size(measure, t, font)[1] for t in (*titles, *(n for _, n in legend)))
    widths = [max(row[c].shape[1] for row in rows) for c in range(len(titles))]
    xs = [GAP + sum(widths[:c]) + GAP * c for c in range(len(titles))]
    width = xs[-1] + widths[-1] + GAP
    # The legend: swatch + name entries, wrapped to the width of the panels.
    entries, x, y = [], GAP, 0
    for index, name in legend:
        size = SWATCH + GAP + _text_size(measure, name, font)[0]
        if x > GAP and x + size > width - GAP:
            x, y = GAP, y + max(line, SWATCH) + GAP
        entries.append((x, y, index, name))
        x += size + 3 * GAP
    title_band = line + 2 * GAP
    body = sum(row[0].shape[0] for row in rows) + GAP * (len(rows) - 1)
    legend_band = y + max(line, SWATCH) + 2 * GAP
    canvas = np.full((title_band + body + legend_band, width, 3), 255, np.uint8)
    y = title_band
    for row in rows:
        for x, panel in zip(xs, row):
            canvas[y:y + panel.shape[0], x:x + panel.shape[1]] = panel
        y += row[0].shape[0] + GAP
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for x, column_width, title in zip(xs, widths, titles):
        text_width = _text_size(draw, title, font)[0]
        draw.text((x + (column_width - text_width) // 2, GAP), title, fill=(0, 0, 0), font=font)
    top = title_band + body + GAP
    for x, y, index, name in entries:
        colour = tuple(int(v) for v in (VOC_PALETTE if palette is None else palette)[index])
        draw.rectangle((x, top + y, x + SWATCH - 1, top + y + SWATCH - 1), fill=colour,
                       outline=(0, 0, 0))
        draw.text((x + SWATCH + GAP, top + y), name, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def legend_picture(names, palette, width=320):
    """HxWx3 uint8: the demo's legend alone, titled "classes": a swatch of each class's
    colour (`palette`, 256x3) beside its name, in class order."""
    blank = np.full((0, width, 3), 255, np.uint8)
    return picture([[blank]], ("classes",), list(enumerate(names)), palette)
