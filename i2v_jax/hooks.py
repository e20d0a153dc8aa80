"""The training loop's hooks: what it does besides stepping, one entry each.

A `Hook` is called after each logged step with that step's metrics
(``after_log``) and after each evaluation with its scalars
(``after_evaluation``); either may be None. Hooks read the run through the
`Loop` the trainer hands them (its config, state and checkpoints) and keep what
they must remember (a warning said once) in ``Loop.said``. `HOOKS` is the
table the trainer calls, in order; a fork adds a check or a side effect by
one entry here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Set


class NonFiniteLoss(FloatingPointError):
  pass


@dataclasses.dataclass
class Loop:
  """What the training loop shares with its hooks."""
  config: Any
  ckpt: Any                # checkpoint.Checkpoints
  lead: bool
  state: Any = None        # the train state after the step
  said: Set[str] = dataclasses.field(default_factory=set)


Metrics = Dict[str, float]


@dataclasses.dataclass(frozen=True)
class Hook:
  name: str
  after_log: Optional[Callable[[Loop, int, Metrics], None]] = None
  after_evaluation: Optional[Callable[[Loop, int, Metrics], None]] = None


def check_finite(loop: Loop, done: int, metrics: Metrics) -> None:
  """Raises NonFiniteLoss when a loss term or a norm is NaN or infinite, naming
  them and the last good checkpoint (untouched)."""
  bad = [k for k, v in metrics.items()
         if (k.startswith('loss/') or k in ('grad_norm', 'param_norm')) and not math.isfinite(v)]
  if bad:
    good = loop.ckpt.latest_step()
    raise NonFiniteLoss(
        f'step {done}: {", ".join(bad)} not finite '
        f'({", ".join(f"{k}={metrics[k]}" for k in bad)}); '
        + (f'the last good checkpoint, step {good}, is untouched in {loop.ckpt.directory}'
           if good is not None else 'no checkpoint was written'))


def _once(loop: Loop, name: str) -> bool:
  if not loop.lead or name in loop.said:
    return False
  loop.said.add(name)
  return True


def warn_saturated_tcl(loop: Loop, done: int, metrics: Metrics) -> None:
  """Once: most TCL softmaxes are one-hot (the term and its gradient are ~0)."""
  saturated = sorted(k for k, v in metrics.items() if k.endswith('/saturated') and v > 0.5)
  if saturated and _once(loop, 'tcl_saturated'):
    print(f'warning: step {done}: {", ".join(saturated)} > 0.5: most TCL softmaxes are '
          'one-hot, so TCL and its gradient are ~0 (distances too large for '
          'loss.tcl.temperature); set --config.loss.tcl.distance_scale=mean or use '
          'cosine distance', flush=True)


def warn_input_bound(loop: Loop, done: int, metrics: Metrics) -> None:
  """Once: over 10% of the step time waits for input."""
  if metrics.get('data_wait_fraction', 0.0) > 0.1 and _once(loop, 'input_bound'):
    print(f'warning: step {done}: {metrics["data_wait_fraction"]:.0%} of the step time '
          'waits for input (over 10%): the host cannot decode frames as '
          'fast as the devices train; give the process more CPU cores', flush=True)


def keep_best(loop: Loop, done: int, scalars: Metrics) -> None:
  """Saves the state as the best checkpoint when ``train.best_metric`` improved."""
  if loop.ckpt.save_best(done, loop.state, scalars) and loop.lead:
    metric = loop.config.train.best_metric
    print(f'best {metric} so far: {scalars[metric]:.2f} (step {done}), saved in '
          f'{loop.ckpt.best_directory}', flush=True)


# The one table of the loop's hooks, called in this order.
HOOKS: Dict[str, Hook] = {h.name: h for h in (
    Hook('finite', after_log=check_finite),
    Hook('tcl_saturated', after_log=warn_saturated_tcl),
    Hook('input_bound', after_log=warn_input_bound),
    Hook('best_checkpoint', after_evaluation=keep_best),
)}


def after_log(loop: Loop, done: int, metrics: Metrics) -> None:
  for hook in HOOKS.values():
    if hook.after_log:
      hook.after_log(loop, done, metrics)


def after_evaluation(loop: Loop, done: int, scalars: Metrics) -> None:
  for hook in HOOKS.values():
    if hook.after_evaluation:
      hook.after_evaluation(loop, done, scalars)
