"""The one user-error type.

Every error a user can fix (a config value, a dataset folder, a checkpoint, a
pretrained file, a second process on the same workdir) derives from `UserError`:
its message is one line naming the key or file and the fix. The command lines
print it as ``error: <message>`` and exit with status 2; anything else is a bug
and keeps its traceback.
"""

import errno
import os
import shutil


class UserError(Exception):
  """A problem the user can fix; the message names what and how."""


class DiskFull(UserError):
  """No space left on a device while writing; what was there before is whole."""


def is_disk_full(error: BaseException) -> bool:
  """Whether ``error`` (or an error it was raised from) is "no space left on the
  device": an ``OSError`` ENOSPC, or TensorFlow's or orbax's wrapping of one."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if 'No space left on device' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def free_space(path: str) -> str:
  """The free space on ``path``'s device (its nearest existing folder), e.g. '12 MB'."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return f'{shutil.disk_usage(path).free / 1e6:.0f} MB'
