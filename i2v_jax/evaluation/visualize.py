"""Ranked lists as a PNG: each query with its top-k gallery entries.

A heading (protocol, which queries, how ranked), then one row per query (the
worst-AP ones, or those named in ``eval.visualize_queries``): the query frame
(blue border) labelled with its name, pid, camera and AP, then the top-k gallery
entries after junk removal (docs/method.md §1), green border for the query's identity,
red otherwise, each labelled with its pid, camera and distance; each gallery
tracklet is shown by its middle frame. Thumbnails keep the dataset's aspect
ratio (`thumbnail_size`).
"""

from __future__ import annotations

import io
import textwrap
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from i2v_jax import atomic


GREEN, RED, BLUE, GREY = (0, 170, 0), (220, 0, 0), (40, 80, 220), (150, 150, 150)


def worst_queries(ap: np.ndarray, num_queries: int) -> np.ndarray:
  """Rows of the ``num_queries`` queries with the lowest AP (skipped ones, NaN, left out)."""
  valid = np.flatnonzero(~np.isnan(ap))
  return valid[np.argsort(ap[valid], kind='stable')][:num_queries]


def chosen_queries(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
  """Rows of the queries named in ``wanted`` (``eval.visualize_queries``), in that order."""
  row = {str(n): i for i, n in enumerate(names)}
  missing = [w for w in wanted if w not in row]
  if missing:
    raise ValueError(f'config eval.visualize_queries names {missing}, not query tracklets '
                     f'of this dataset (e.g. {list(row)[:3]})')
  return np.array([row[w] for w in wanted], np.int64)


def ranked_lists(rows: Sequence[int], distmat: np.ndarray, query: Dict[str, np.ndarray],
                 gallery: Dict[str, np.ndarray], *, top: int):
  """[(query row, [(gallery row, is_match, distance)])]: the ``top`` nearest non-junk entries.

  Args:
    rows: query rows to show; distmat: (len(rows), G) their distances to the
      gallery; query / gallery: ``pids`` and ``camids`` of every entry.
  """
  out = []
  for qi, row in zip(rows, distmat):
    same_pid = gallery['pids'] == query['pids'][qi]
    junk = same_pid & (gallery['camids'] == query['camids'][qi])
    order = [g for g in np.argsort(row, kind='stable') if not junk[g]][:top]
    out.append((int(qi), [(int(g), bool(same_pid[g]), float(row[g])) for g in order]))
  return out


def thumbnail_size(height: int, width: int, rows: int = 128) -> Tuple[int, int]:
  """(w, h) of a thumbnail ``rows`` pixels high with the dataset's aspect ratio."""
  return max(1, round(rows * width / height)), rows


def _thumbnail(jpeg: bytes, size, color) -> Image.Image:
  image = Image.open(io.BytesIO(jpeg)).convert('RGB').resize(size)
  framed = Image.new('RGB', (size[0] + 8, size[1] + 8), color)
  framed.paste(image, (4, 4))
  return framed


def render(lists, query_reader, query_frame: Sequence[int], gallery_reader, path: str,
           size=(64, 128), *, title: str = '', query: Optional[Dict[str, np.ndarray]] = None,
           gallery: Optional[Dict[str, np.ndarray]] = None,
           ap: Optional[np.ndarray] = None) -> None:
  """Draws ``lists`` from `ranked_lists` into ``path`` (written whole, then renamed).

  ``query_reader`` / ``gallery_reader``: anything with ``frames(row)`` -> JPEG
  bytes per frame (`i2v_jax.input_pipeline.TrackletReader`);
  ``query_frame[q]``: which frame of query tracklet q is the query image;
  ``size``: (w, h) of a thumbnail (`thumbnail_size`). With ``title`` a heading
  line; with ``query`` / ``gallery`` (``names``, ``pids``, ``camids``) and ``ap``
  each query is labelled with its name, pid, camera and AP and each entry with
  its pid, camera and distance (with ``names`` only: by name). An entry whose
  match is None (identities unknown, as in a search) gets a grey border.
  """
  font = ImageFont.load_default()
  labelled = query is not None and gallery is not None
  query_lines, entry_lines = {}, {}
  if labelled:  # every label first: a cell is as wide as its longest label
    for q, ranked in lists:
      lines = [str(query['names'][q])]
      if 'pids' in query:
        lines.append(f'pid {query["pids"][q]} c{query["camids"][q]}')
      if ap is not None:
        lines.append(f'AP {100 * ap[q]:.1f}%')
      query_lines[q] = lines
      for g, _, distance in ranked:
        who = (f'pid {gallery["pids"][g]} c{gallery["camids"][g]}' if 'pids' in gallery
               else str(gallery['names'][g]))
        entry_lines[(q, g)] = [who, f'd {distance:.3f}']
  longest = max((len(t) for ls in [*query_lines.values(), *entry_lines.values()] for t in ls),
                default=0)
  cell_w, cell_h = max(size[0] + 8, _CHAR * longest + 6), size[1] + 8
  text_h = 3 * _LINE if labelled else 0
  row_h = cell_h + text_h + 4
  top = max((len(g) for _, g in lists), default=0)
  width = (top + 1) * (cell_w + 4) + 8
  title_lines = textwrap.wrap(title, max(1, (width - 8) // 6))
  title_h = len(title_lines) * _LINE + 6 if title else 0
  canvas = Image.new('RGB', (width, title_h + len(lists) * row_h + 4), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for i, line in enumerate(title_lines):
    draw.text((4, 3 + i * _LINE), line, fill=(0, 0, 0), font=font)
  for y, (q, ranked) in enumerate(lists):
    top_y = title_h + 4 + y * row_h
    canvas.paste(_thumbnail(query_reader.frames(q)[query_frame[q]], size, BLUE), (0, top_y))
    if labelled:
      _write(draw, font, query_lines[q], (0, top_y + cell_h))
    for x, (g, match, _) in enumerate(ranked, start=1):
      frames = gallery_reader.frames(g)
      left = 8 + x * (cell_w + 4)
      color = GREY if match is None else GREEN if match else RED
      canvas.paste(_thumbnail(frames[len(frames) // 2], size, color), (left, top_y))
      if labelled:
        _write(draw, font, entry_lines[(q, g)], (left, top_y + cell_h))
  atomic.write_with(lambda tmp: canvas.save(tmp, format='PNG'), path)


_LINE = 12  # pixels per text line (PIL's default bitmap font)
_CHAR = 6   # pixels per character of that font


def _write(draw, font, lines: Sequence[str], corner: Tuple[int, int]) -> None:
  """Lines of text under a thumbnail (the cell is as wide as the longest)."""
  for i, line in enumerate(lines):
    draw.text((corner[0] + 2, corner[1] + i * _LINE), line, fill=(0, 0, 0), font=font)
