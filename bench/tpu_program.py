r"""Read a compiled TPU train step for what a TPU engineer would look at.

    python -m i2v_jax.aot --config=configs/base.py:preset=mdkt,dataset=mars \
        --topology=v5e-8 --config.model.dtype=bfloat16 --no_eval --dump_hlo=step.hlo
    python bench/tpu_program.py step.hlo

Prints, from the program text alone (the compiler's choices, not a measurement):
convolutions by element type, forward and backward (`transpose(jvp(...))` in
their op names), and the f32 ones listed; the HBM-level layout changes (a
`copy` or `transpose` outside a fusion: a tensor written again in another
layout) with their sizes; the stem's input layout (whether its 3 channels are
the minor, 128-lane-padded dimension); the attention kernels of the non-local
blocks; and anything that talks to the host (infeed, outfeed, send/recv, host
callbacks). Sizes are logical (elements x bytes), before TPU tile padding.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from i2v_jax.aot import array_bytes

HEADER = re.compile(r'^(ENTRY )?%([\w.\-]+) \(.*\) -> .* \{$')
INSTRUCTION = re.compile(
    r'^\s+(?:ROOT )?%([\w.\-]+) = (\([^=]*?\)|[a-z0-9]+\[[\d,]*\](?:\{[^}]*\})?) '
    r'([a-z][\w\-]*)\((.*?)\)(.*)$')
SHAPE = re.compile(r'([a-z0-9]+)\[([\d,]*)\](?:\{([^}]*)\})?')


def parse(text: str) -> Dict[str, List[dict]]:
  """{computation: [instruction]} with name, shape, op, operands, attributes."""
  computations: Dict[str, List[dict]] = {}
  current = None
  for line in text.splitlines():
    head = HEADER.match(line)
    if head:
      current = ('ENTRY ' if head.group(1) else '') + head.group(2)
      computations[current] = []
      continue
    m = INSTRUCTION.match(line)
    if m and current is not None:
      name, shape, op, operands, rest = m.groups()
      computations[current].append({
          'name': name, 'shape': shape, 'op': op, 'rest': rest,
          'operands': re.findall(r'%([\w.\-]+)', operands)})
  return computations


def op_name(inst: dict) -> str:
  m = re.search(r'op_name="([^"]*)"', inst['rest'])
  return m.group(1) if m else ''


def fused(computations: Dict[str, List[dict]]) -> set:
  """Names of computations that run inside a fusion (on-chip, not HBM round trips)."""
  inside = set()
  for insts in computations.values():
    for inst in insts:
      if inst['op'] == 'fusion':
        inside.update(re.findall(r'calls=%([\w.\-]+)', inst['rest']))
  return inside


def report(text: str) -> List[str]:
  computations = parse(text)
  inside = fused(computations)
  shapes = {i['name']: i['shape'] for insts in computations.values() for i in insts}
  every = [i for insts in computations.values() for i in insts]
  top = [i for c, insts in computations.items() if c not in inside for i in insts]
  lines = []

  convs = [i for i in every if i['op'] == 'convolution']
  kinds: Dict[Tuple[str, str], int] = collections.Counter()
  for c in convs:
    direction = 'backward' if 'transpose(' in op_name(c) else 'forward'
    kinds[(SHAPE.match(c['shape']).group(1), direction)] += 1
  lines.append(f'convolutions: {len(convs)} (' + ', '.join(
      f'{n} {dtype} {direction}' for (dtype, direction), n in sorted(kinds.items())) + ')')
  f32 = [c for c in convs if c['shape'].startswith('f32')]
  windows = collections.Counter(
      (re.search(r'window=\{([^}]*)\}', c['rest']) or [None, ''])[1] for c in f32)
  for window, n in windows.most_common(4):
    lines.append(f'  f32: {n} x window {{{window}}}')

  moves = [i for i in top if i['op'] in ('copy', 'transpose')]
  moved = sum(array_bytes(i['shape']) for i in moves)
  lines.append(f'layout changes outside fusions: {len(moves)} copy/transpose, '
               f'{moved / 2 ** 20:.1f} MiB written')
  for i in sorted(moves, key=lambda i: -array_bytes(i['shape']))[:5]:
    source = shapes.get(i['operands'][0], '?') if i['operands'] else '?'
    lines.append(f'  {array_bytes(i["shape"]) / 2 ** 20:.1f} MiB {source} -> {i["shape"]} '
                 f'({op_name(i)[-70:]})')

  stems = [c for c in convs if 'backbone/conv1/conv_general_dilated' in op_name(c)
           and 'transpose(' not in op_name(c)]
  for c in stems[:2]:
    source = shapes.get(c['operands'][0], '?')
    dims = SHAPE.match(source)
    minor = dims.group(3).split(':')[0].split(',')[0] if dims and dims.group(3) else '?'
    channels_minor = dims and minor == str(len(dims.group(2).split(',')) - 1)
    network = (re.search(r'jvp\((\w*)\)', op_name(c)) or [None, '?'])[1]
    lines.append(f'stem ({network}): input {source}: the 3 channels are '
                 + ('the minor dimension (padded to 128 lanes)' if channels_minor else
                    f'not the minor dimension (minor is dimension {minor}): no lane padding'))

  kernels = [i for i in every if 'custom_call_target="tpu_custom_call"' in i['rest']]
  if kernels:
    lines.append(f'compiler-generated TPU kernels (tpu_custom_call): {len(kernels)}, outputs '
                 + ', '.join(sorted({k['shape'].split('{')[0] for k in kernels})))
  host = [i for i in every if i['op'] in ('infeed', 'outfeed', 'send', 'recv', 'send-done',
                                          'recv-done')
          or re.search(r'custom_call_target="[^"]*(callback|host)', i['rest'], re.I)]
  lines.append(f'host traffic inside the step: {len(host)} op(s)'
               + (': ' + ', '.join(sorted({i["op"] for i in host})) if host else ''))
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('hlo', help='a program written by python -m i2v_jax.aot --dump_hlo')
  args = parser.parse_args(argv)
  try:
    text = open(args.hlo).read()
  except OSError as e:
    print(f'error: {args.hlo}: {e.strerror}; write one with python -m i2v_jax.aot '
          '... --dump_hlo=FILE', file=sys.stderr)
    return 2
  for line in report(text):
    print(line)
  return 0


if __name__ == '__main__':
  sys.exit(main())
