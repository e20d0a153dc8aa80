"""One command-line style for every tool: absl flags (``--name=value``, lists as
``a,b``), ``--help`` and ``-h`` print the tool's usage and exit 0, and every flag
error is one line, ``error: ...``, exit 2, naming the flag (with "did you mean"
for a misspelt one).

A tool defines its flags on its own ``flags.FlagValues`` (so a tool can be
called in-process with an argument list, as the tests do) and calls `parse`::

    fl = flags.FlagValues()
    workdir = flags.DEFINE_string('workdir', None, 'a trained run', flag_values=fl)
    parse(fl, argv, __doc__)   # exits on --help and on a bad flag

`i2v_jax.main` and the sweep parse their global flags through `help_requested`
and `usage` too.
"""

from __future__ import annotations

import re
import sys
from typing import List, Optional, Sequence

HELP = ('--help', '-h', '--helpshort', '--helpfull', '-help')


def help_requested(argv: Sequence[str]) -> bool:
  """Whether the arguments (before a ``--``) ask for the usage."""
  args = list(argv[1:])
  if '--' in args:
    args = args[:args.index('--')]
  return any(a in HELP for a in args)


_ABSL_OWN = ('help', 'helpfull', 'helpshort', 'helpxml', 'flagfile', 'undefok')


def _names(flag_values, names: Optional[Sequence[str]]) -> List[str]:
  """The tool's flags: ``names``, or every flag of ``flag_values`` but absl's own."""
  if names is not None:
    return list(names)
  return sorted(n for n in flag_values if n == flag_values[n].name and n not in _ABSL_OWN)


def usage(flag_values, doc: str, program: str, names: Optional[Sequence[str]] = None,
          more: Sequence[str] = ()) -> str:
  """The tool's docstring, then each flag with its help and default (``more``:
  lines for flags defined later, as the main command's --config)."""
  lines = [doc.strip(), '', f'flags of {program}:', *more]
  for name in _names(flag_values, names):
    flag = flag_values[name]
    d = flag.default
    shown = ('on' if d else 'off') if isinstance(d, bool) else (
        ','.join(map(str, d)) if isinstance(d, list) else d)
    default = '' if d in (None, '', []) else f' (default: {shown})'
    lines.append(f'  --{name}: {flag.help}{default}')
  lines.append('  -h, --help: this text')
  return '\n'.join(lines)


def error_line(error: BaseException, flag_values,
               names: Optional[Sequence[str]] = None) -> str:
  """One line for a flag error: the flag, the problem and, for an unknown flag,
  the nearest known one and the list of flags."""
  text = ' '.join(str(error).split())
  unknown = unknown_flag_line(text, [f'--{n}' for n in _names(flag_values, names)])
  if unknown:
    return unknown
  required = re.match(r'flag --(\w+)=None: Flag --\w+ must have a value other than None', text)
  if required:
    flag = flag_values[required.group(1)]
    return f'--{flag.name} is required: {flag.help}'
  return text


def unknown_flag_line(text: str, known: Sequence[str]) -> Optional[str]:
  """absl's "Unknown command line flag" error as one line: the flag, absl's nearest
  known one as "did you mean", and the ``known`` flags; None for other errors."""
  unknown = re.match(r"Unknown command line flag '([^']+)'(?:\. Did you mean: ([\w, ]+) \?)?",
                     text)
  if not unknown:
    return None
  near = unknown.group(2) and unknown.group(2).split(',')[0].strip()
  return (f'--{unknown.group(1)}: no such flag' + (f'; did you mean --{near}?' if near else '')
          + f' (the flags: {", ".join(known)})')


def parse(flag_values, argv: Optional[Sequence[str]], doc: str,
          program: Optional[str] = None, names: Optional[Sequence[str]] = None) -> List[str]:
  """Parses ``argv`` (``sys.argv`` when None; ``argv[0]`` is the program) into
  ``flag_values``; prints the usage and exits 0 on ``--help``/``-h``, prints one
  line and exits 2 on a bad flag. Returns the arguments that are not flags.
  ``names``: the tool's flags, when ``flag_values`` holds others' too (absl's
  global FLAGS)."""
  from absl import flags
  argv = list(sys.argv if argv is None else argv)
  program = program or f'python -m {_module_name(argv[0])}'
  if help_requested(argv):
    print(usage(flag_values, doc, program, names))
    sys.exit(0)
  try:
    return flag_values(argv)
  except flags.Error as e:
    print(f'error: {error_line(e, flag_values, names)}', file=sys.stderr)
    sys.exit(2)


def _module_name(path: str) -> str:
  """'i2v_jax/search.py' -> 'i2v_jax.search' (the name `python -m` takes)."""
  path = path.replace('\\', '/')
  for root in ('i2v_jax/', 'data_prep/'):
    if root in path:
      tail = path[path.rindex(root):]
      return tail.removesuffix('.py').removesuffix('/__main__').replace('/', '.')
  return path
