"""The one user-error type.

Every error a user can fix (a config value, a dataset folder, a checkpoint, a
pretrained file, a second process on the same workdir) derives from `UserError`:
its message is one line naming the key or file and the fix. The command lines
print it as ``error: <message>`` and exit with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
  """A problem the user can fix; the message names what and how."""
