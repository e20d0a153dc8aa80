r"""Train-step throughput and memory of the full MDKT step, from in-memory batches.

    python bench/train_step.py [--ids 2 --k 4] [--dtype float32 bfloat16] [--runs 5]
        [--steps 3] [--reference torch [--torch_compile] [--torch_python PATH]]

ResNet-50 teacher with TKP's five non-local blocks on T=4-frame clips plus a
ResNet-50 student on M=4 images, 256x128, every MDKT term (ID and batch-hard
triplet on both networks, TCL, both mutual-learning KLs, reverse TCL), Adam.
The batch is P=--ids identities x K=--k tracklets of random pixels made in numpy
(no tensorflow, no dataset), sharded over every local device. For each dtype:
one warm-up call (compilation, timed separately), then --runs runs of --steps
steps; prints the median step time, frames/s (B x T teacher frames per step; the
student sees M of them), and peak memory (device allocator on GPU/TPU, process
peak RSS on CPU); then the step's FLOPs from XLA's cost analysis of the lowered
step before optimisation (one device's program times the number of devices: the
same count on every backend; see `flops_of`), the FLOP/s achieved and,
with ``--peak_tflops`` (per device), the MFU, and XLA's memory analysis (one
device's). ``--breakdown`` times each part alone on one device (teacher and
student forward, forward+backward; the loss terms; the optimizer update).

``--reference torch`` also runs `bench/torch_reference.py` (the same networks and
losses in PyTorch) in a child process per row, before JAX starts (a JAX process
keeps the GPU memory it has used), on a batch of the same shape, eager in each
--dtype (bfloat16 as autocast) and, with ``--torch_compile``, under
``torch.compile`` too; it checks that the PyTorch networks have exactly JAX's
trainable-parameter count, gives the PyTorch step JAX's FLOP count, and prints each JAX / PyTorch
throughput ratio; ``--torch_python`` names an interpreter that has torch
(default: this one).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def bench_config(args, dtype):
  from configs import base
  c = base.get_config('preset=mdkt')
  c.input.num_ids, c.input.tracklets_per_id = args.ids, args.k
  c.input.height, c.input.width = args.height, args.width
  c.model.dtype = dtype
  if args.tiny:  # for a smoke run of the script itself
    c.model.stage_sizes, c.model.width = (1, 1, 1, 1), 8
    c.model.nonlocal_blocks.layer2, c.model.nonlocal_blocks.layer3 = (0,), (0,)
  return c


def run_jax(args, dtype):
  import jax
  import numpy as np
  from i2v_jax import train_step
  c = bench_config(args, dtype)
  num_classes = 625
  mesh = train_step.make_mesh()
  state = train_step.replicate(train_step.create_train_state(c, num_classes, jax.random.key(0)), mesh)
  step = train_step.make_train_step(c, mesh)
  b, t = args.ids * args.k, c.input.clip_len
  rng = np.random.default_rng(0)
  h, w, pad = args.height, args.width, c.input.pad_crop
  on = rng.random((b, t, 1)) < c.input.erasing_prob
  batch = train_step.shard_batch({
      'clips': rng.normal(size=(b, t, h, w, 3)).astype(np.float32),
      'labels': np.repeat(rng.choice(num_classes, args.ids, replace=False),
                          args.k).astype(np.int32),
      # The augmentation draws the input pipeline sends: the step applies them.
      'flip': np.repeat(rng.random((b, 1)) < 0.5, t, axis=1),
      'crop': rng.integers(0, 2 * pad + 1, (b, t, 2)).astype(np.int32),
      'erase': (np.concatenate([rng.integers(0, h // 2, (b, t, 1)),
                                rng.integers(0, w // 2, (b, t, 1)),
                                np.full((b, t, 1), h // 3), np.full((b, t, 1), w // 3)],
                               axis=-1) * on).astype(np.int32)}, mesh)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops, memory = flops_of(lowered), memory_of(compiled)
  if flops:  # the step is one device's code under shard_map: the whole step is all of them
    flops *= len(jax.devices())
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - t0) / args.steps)
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    peak = f'{stats["peak_bytes_in_use"] / 2 ** 30:.2f} GiB device peak'
  else:
    peak = f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB process peak RSS'
  median = statistics.median(times)
  row = {'dtype': dtype, 'step_s': median, 'frames_per_s': b * t / median,
         'compile_s': compile_s, 'peak': peak, 'loss': float(metrics['loss/total']),
         'flops': flops, 'memory': memory, 'devices': len(jax.devices()),
         'params': sum(x.size for x in jax.tree.leaves(state.params))}
  if args.breakdown:
    row['parts'] = breakdown(args, c, num_classes, state, batch)
  return row


def flops_of(lowered):
  """FLOPs of one call of a lowered function's program (for a shard_map, one
  device's), by XLA's count of the not yet optimised program: the same figure on
  every backend. The compiled program's count is not: on a GPU the convolutions
  and many matrix products become cuDNN and cuBLAS calls that XLA's count leaves
  out (1,014 GFLOP for the P=8 step whose lowered program counts 7,227). None
  where XLA gives no count."""
  cost = lowered.cost_analysis()
  cost = cost if isinstance(cost, (list, tuple)) else [cost]
  return sum(float(c.get('flops', 0.0)) for c in cost if c) or None


def memory_of(compiled) -> str:
  """XLA's memory analysis of a compiled function (one device's), as text."""
  mem = compiled.memory_analysis()
  if mem is None:
    return 'no memory analysis'
  gib = lambda n: f'{n / 2 ** 30:.2f}'
  return (f'args {gib(mem.argument_size_in_bytes)} + temp {gib(mem.temp_size_in_bytes)}'
          f' + out {gib(mem.output_size_in_bytes)} GiB')


def _timed(fn, *args, runs):
  """(median seconds of a call after a warm-up, FLOPs of one call)."""
  import jax
  lowered = jax.jit(fn).lower(*args)
  compiled = lowered.compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), flops_of(lowered)


def breakdown(args, c, num_classes, state, batch):
  """Each part of the step alone, on one device: the networks' forward and
  forward+backward, the loss terms (with their gradient w.r.t. the networks'
  outputs) and the optimizer update. {part: (seconds, FLOPs)}."""
  import jax
  import jax.numpy as jnp
  import optax
  from i2v_jax import networks
  from i2v_jax.losses.objective import objective
  device = jax.devices()[0]
  local = lambda tree: jax.device_put(jax.device_get(tree), device)
  params, stats = local(state.params), local(state.batch_stats)
  clips, labels = local(batch['clips']), local(batch['labels'])
  views = networks.views(clips, c.input.student_frames)
  parts = {}
  outputs = {}
  for net in state.networks:
    name, model, x = net.name, net.module, views[net.view]
    variables = {'params': params[name], 'batch_stats': stats[name]}
    forward = lambda v, x, model=model: model.apply(v, x, train=True, mutable=['batch_stats'])
    parts[f'{name} forward'] = _timed(forward, variables, x, runs=args.runs)
    outputs[name] = jax.jit(forward)(variables, x)[0]

    def fwd_bwd(p, x, model=model, name=name):
      def loss(p):
        out, _ = model.apply({'params': p, 'batch_stats': stats[name]}, x, train=True,
                             mutable=['batch_stats'])
        return sum(jnp.sum(v.astype(jnp.float32)) for v in jax.tree.leaves(out))
      return jax.grad(loss)(p)
    parts[f'{name} forward+backward'] = _timed(fwd_bwd, params[name], x, runs=args.runs)
  losses = jax.grad(lambda o: objective(o, labels, c.loss)[0])
  parts['loss terms (+ their gradient)'] = _timed(losses, outputs, runs=args.runs)
  tx = state.tx
  opt_state = local(state.opt_state)

  def update(p, o):
    updates, o = tx.update(p, o, p)  # the parameters stand in for their gradients
    return optax.apply_updates(p, updates), o
  parts['optimizer update'] = _timed(update, params, opt_state, runs=args.runs)
  return parts


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--ids', type=int, default=2, help='P identities per step')
  parser.add_argument('--k', type=int, default=4, help='K tracklets per identity')
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--dtype', nargs='+', default=['float32'],
                      choices=['float32', 'bfloat16'])
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--tiny', action='store_true', help='tiny widths (smoke test)')
  parser.add_argument('--reference', choices=['torch'])
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help='per-device peak TFLOP/s for MFU (H100 bf16 dense: 990 spec, '
                      '~800 measured on matmul)')
  parser.add_argument('--breakdown', action='store_true',
                      help='also time each part of the step alone (one device)')
  parser.add_argument('--torch_compile', action='store_true',
                      help='--reference torch: also time the step under torch.compile')
  parser.add_argument('--torch_python', default=sys.executable)
  args = parser.parse_args()
  # PyTorch first: a JAX process keeps the GPU memory it has used, and the
  # reference beside it ran out of memory at P=32.
  refs, failed = torch_rows(args) if args.reference == 'torch' else ([], [])
  if failed and not refs:  # nothing to compare with: stop before compiling anything
    raise SystemExit(failed[0])
  import jax
  b = args.ids * args.k
  print(f'MDKT train step, ResNet-50{" (tiny)" if args.tiny else ""} teacher (non-local, T=4) '
        f'+ student (M=4), {args.height}x{args.width}, batch {args.ids}x{args.k} = {b} '
        f'clips = {b * 4} frames; {len(jax.devices())} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}, jax {jax.__version__}); median of {args.runs} runs '
        f'of {args.steps} steps', flush=True)
  rows = []
  for dtype in args.dtype:  # each row as it lands: a run cut short keeps the rows before
    rows.append(run_jax(args, dtype))
    print_row(rows[-1], args)
  if refs:
    compare(args, rows, refs)
  if failed:  # the rows that ran are printed; the exit status still says some did not
    raise SystemExit(failed[0] + (f' ({len(failed) - 1} more PyTorch rows failed)'
                                  if len(failed) > 1 else ''))


def print_row(r, args):
  print(f'  jax {r["dtype"]:8s}: {r["step_s"] * 1e3:9.1f} ms/step  '
        f'{r["frames_per_s"]:8.1f} frames/s  (compile {r["compile_s"]:.1f} s; '
        f'{r["peak"]}; loss {r["loss"]:.3f})')
  print(f'      {flops_line(r["flops"], r["step_s"], r["devices"], args.peak_tflops)}; '
        f'XLA memory: {r["memory"]}')
  for part, (seconds, flops) in r.get('parts', {}).items():
    print(f'      {part:32s} {seconds * 1e3:9.1f} ms  '
          f'{flops_line(flops, seconds, 1, args.peak_tflops)}')
  sys.stdout.flush()


def torch_rows(args):
  """Runs bench/torch_reference.py, each in its own process, for each --dtype
  (eager, and compiled with --torch_compile); prints each row as it lands.
  Returns (rows, one line per failed row naming the fix)."""
  refs, failed = [], []
  for dtype in args.dtype:
    for mode in ['eager'] + (['compile'] if args.torch_compile else []):
      cmd = [args.torch_python, os.path.join(REPO, 'bench', 'torch_reference.py'),
             '--ids', str(args.ids), '--k', str(args.k), '--height', str(args.height),
             '--width', str(args.width), '--runs', str(args.runs), '--steps', str(args.steps),
             '--dtype', dtype] + (['--tiny'] if args.tiny else []) + (
                 ['--compile'] if mode == 'compile' else [])
      out = subprocess.run(cmd, check=False, capture_output=True, text=True)
      if out.returncode:
        last = (out.stderr.strip().splitlines() or ['(no output)'])[-1]
        failed.append(f'bench/torch_reference.py under {args.torch_python} failed ({dtype} '
                      f'{mode}): {last}; pass --torch_python=<an interpreter that has torch>')
        print(f'  torch {dtype:8s} {mode:7s}: failed: {last}', flush=True)
        continue  # the other rows still mean something
      ref = json.loads(out.stdout.strip().splitlines()[-1])
      refs.append(ref)
      print(f'  torch {ref["version"]} {ref["dtype"]:8s} {ref["mode"]:7s} on {ref["device"]}: '
            f'{ref["step_s"] * 1e3:9.1f} ms/step  {ref["frames_per_s"]:8.1f} frames/s  '
            f'(first step {ref["first_step_s"]:.1f} s; loss {ref["loss"]:.3f})', flush=True)
  return refs, failed


def compare(args, rows, refs):
  """Checks the PyTorch networks are JAX's (trainable-parameter count) and prints
  each PyTorch row's FLOP/s at JAX's FLOP count and the JAX / PyTorch ratios."""
  jax_rows = {r['dtype']: r for r in rows}
  if refs[0]['params'] != rows[0]['params']:
    raise SystemExit(f'bench/torch_reference.py: {refs[0]["params"]:,} trainable parameters, '
                     f'JAX has {rows[0]["params"]:,}: not the same networks; make the two '
                     'agree before comparing them.')
  print(f'  jax against torch (same networks: {rows[0]["params"]:,} trainable parameters '
        'in both):')
  devices = rows[0]['devices']
  if devices > 1:  # PyTorch runs on one device: compare per device
    print(f'  (JAX ran on {devices} devices, PyTorch on one: ratios are per device)')
  for ref in refs:
    jax_row = jax_rows[ref['dtype']]
    print(f'  torch {ref["dtype"]:8s} {ref["mode"]:7s}: '
          f'{flops_line(jax_row["flops"], ref["step_s"], 1, args.peak_tflops)} '
          '(JAX\'s FLOP count); ratio jax / torch: '
          f'{jax_row["frames_per_s"] / devices / ref["frames_per_s"]:.2f}x frames/s')
  eager32 = [r for r in refs if r['dtype'] == 'float32' and r['mode'] == 'eager']
  for r in rows:
    if eager32 and r['dtype'] != 'float32':
      print(f'  ratio jax {r["dtype"]} / torch float32 eager: '
            f'{r["frames_per_s"] / devices / eager32[0]["frames_per_s"]:.2f}x frames/s')


def flops_line(flops, seconds, devices, peak_tflops) -> str:
  """'X GFLOP, Y TFLOP/s achieved[, MFU Z%]' for ``devices`` running ``seconds``."""
  if not flops:
    return 'FLOPs: not reported by XLA'
  achieved = flops / seconds
  text = f'{flops / 1e9:,.1f} GFLOP, {achieved / 1e12:.3f} TFLOP/s achieved'
  if peak_tflops:
    text += f', MFU {100 * achieved / (peak_tflops * 1e12 * devices):.1f}%'
  return text


if __name__ == '__main__':
  main()
