"""JAX's persistent compilation cache, on by default for the command line and tests.

A run, every later run of the same shapes (a resumed run, each sweep variant after
the first, evaluate mode, the test suite's second pass) loads its compiled
programs from disk instead of compiling them again. JAX keys each entry by the
program, the jax/jaxlib versions, the backend and its options, so an entry from
another version is never used; the folder is split by CPU model as well, since
XLA:CPU compiles for the host's instruction set.

Location: ``$I2V_JAX_CACHE_DIR`` if set, else ``~/.cache/i2v_jax/jax-<cpu>``;
``I2V_JAX_CACHE_DIR=off`` turns it off; a ``JAX_COMPILATION_CACHE_DIR`` you set
yourself is left as it is. Only programs that took at least 1 s to compile are
stored. The cache is trusted code: do not point it at a folder others can write.
"""

from __future__ import annotations

import hashlib
import os
import platform
from typing import Optional

import jax


def default_dir() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'i2v_jax', f'jax-{_cpu_key()}')


def _cpu_key() -> str:
  text = platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      text += ''.join(sorted({line for line in f if line.startswith(('model name', 'flags'))}))
  except OSError:
    text += platform.processor()
  return hashlib.sha1(text.encode()).hexdigest()[:10]


def enable(path: Optional[str] = None) -> Optional[str]:
  """Turns the cache on (before the first compilation); returns its folder or None."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  path = path or os.environ.get('I2V_JAX_CACHE_DIR') or default_dir()
  if path.lower() in ('off', '0', 'none', 'false'):
    return None
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  return path
