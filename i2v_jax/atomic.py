"""Files written whole: a temporary name in the same folder, then a rename, so a
crash never leaves a half-written file under the real name."""

from __future__ import annotations

import json
import os


def write_json(obj, path: str) -> None:
  """JSON to ``path`` atomically."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def write_text(text: str, path: str) -> None:
  """Text to ``path`` atomically."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
