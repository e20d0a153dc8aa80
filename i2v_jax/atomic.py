"""Files written whole: a temporary name in the same folder, then a rename, so a
crash (or a full disk) never leaves a half-written file under the real name.
A folder written as one thing (a TF SavedModel) is staged the same way."""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

import numpy as np

from i2v_jax.errors import DiskFull, free_space, is_disk_full


def write_json(obj, path: str) -> None:
  """JSON to ``path`` atomically."""
  write_text(json.dumps(obj, indent=1), path)


def write_text(text: str, path: str) -> None:
  """Text to ``path`` atomically."""
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)
  write_with(write, path)


def write_npz(path: str, **arrays) -> None:
  """Arrays to the ``.npz`` file ``path`` atomically."""
  def write(tmp):
    with open(tmp, 'wb') as f:  # a file object: numpy adds no suffix to the name
      np.savez(f, **arrays)
  write_with(write, path)


def write_with(write: Callable[[str], None], path: str) -> None:
  """``write(tmp)`` writes the whole file under a temporary name; it then becomes ``path``.

  Raises:
    DiskFull when the device is full: ``path`` keeps its previous content and
    the temporary file is removed.
  """
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException as e:  # whatever stopped it (a full disk, Ctrl-C): no tmp file left
    if os.path.exists(tmp):
      os.remove(tmp)
    if is_disk_full(e):
      raise DiskFull(f'{path}: no space left on the device ({free_space(path)} free); '
                     'the file keeps its previous content; free space and run the same '
                     'command again') from None
    raise


def write_folder(write: Callable[[str], None], path: str) -> None:
  """``write(tmp)`` fills a new folder under a temporary name; it then replaces
  ``path`` (an earlier folder there is removed only after the new one is in
  place). On any failure the temporary folder is removed and ``path`` is as it was.

  Raises:
    DiskFull when the device is full.
  """
  tmp, old = f'{path}.tmp-{os.getpid()}', f'{path}.old-{os.getpid()}'
  try:
    write(tmp)
    if os.path.isdir(path):
      os.rename(path, old)
    os.rename(tmp, path)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if os.path.isdir(old) and not os.path.exists(path):
      os.rename(old, path)
    if is_disk_full(e):
      raise DiskFull(f'{path}: no space left on the device ({free_space(path)} free); '
                     'the folder keeps its previous content; free space and run the same '
                     'command again') from None
    raise
  shutil.rmtree(old, ignore_errors=True)


def append_line(path: str, line: str) -> None:
  """Appends ``line`` and a newline to a JSON-lines file, starting a new line first
  when the file ends in a torn one (a full disk cut the last append short), so
  one torn entry never swallows the next."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'a+b') as f:
    torn = False
    if f.tell() > 0:
      f.seek(-1, os.SEEK_END)
      torn = f.read(1) != b'\n'
    f.write((('\n' if torn else '') + line + '\n').encode('utf-8'))
