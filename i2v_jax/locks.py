"""One writer per folder: an advisory lock file that names its holder.

`hold` takes an exclusive ``fcntl.flock`` on a lock file and writes the holder's
pid and host into it. The kernel drops the lock when the holder exits, however
it exits (kill -9 included), so a lock is never stale: a lock file left behind
by a dead process is simply taken again. A second process asking for a held
lock gets `Locked`, one line naming the holder from the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Iterator

from i2v_jax.errors import DiskFull, UserError, free_space, is_disk_full


class Locked(UserError):
  """Another process holds the lock."""


@contextlib.contextmanager
def hold(path: str, what: str, remove: bool = False) -> Iterator[None]:
  """Holds the lock ``path`` for the block; ``what``: the folder's use, for the message.
  ``remove``: delete the lock file when done (for a lock beside a folder, so
  nothing is left next to it), unlinked while still held.

  Raises:
    Locked naming the other process (pid, host, since when) when it is held.
  """
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise _cannot_write(path, what, e) from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      try:
        with open(path) as f:
          holder = json.load(f)
        who = (f'pid {holder["pid"]} on {holder["host"]}, since '
               f'{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))}')
      except (OSError, ValueError, KeyError):
        who = 'another process'
      raise Locked(f'{what} is in use by {who} (lock {path}); wait for it to finish or stop '
                   'it, then run again') from None
    try:
      os.ftruncate(fd, 0)
      os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                               'since': time.time()}).encode())
      os.fsync(fd)
    except OSError as e:
      if remove:
        os.unlink(path)
      raise _cannot_write(path, what, e) from None
    try:
      yield
    finally:
      if remove:
        os.unlink(path)
  finally:
    os.close(fd)  # releases the lock


def _cannot_write(path: str, what: str, error: OSError) -> UserError:
  """The one line for a lock file that cannot be written (full disk, permissions)."""
  if is_disk_full(error):
    return DiskFull(f'{path}: no space left on the device ({free_space(path)} free) for '
                    f'the lock of {what}; nothing was changed; free space and run again')
  return UserError(f'{path}: cannot write the lock of {what} ({error.strerror}); make the '
                   'folder writable or choose another')
