r"""The CPU-sized synthetic benchmark: the quickstart run and the benchmark (docs/benchmark.md).

    python -m i2v_jax.main --config=configs/synthetic_cpu.py --workdir=runs/quickstart
    python -m i2v_jax.experiments.sweep --config=configs/synthetic_cpu.py --workdir=runs/ablation \
        --seeds=0,1,2,3,4 --jobs=2 --devices=2 [--starts=reid,generic,scratch]

``get_config(arg)`` is `configs/base.py`'s config (same arguments: preset=...)
shrunk to the CPU-sized setting below. The quickstart trains it on the small
default synthetic dataset from a random start; ``sweep()`` lists the benchmark's
variants, which the sweep trains on the frozen ``benchmark`` dataset (`DATA`)
from each start of ``starts()`` (default: ``reid``).

CPU-sized setting (every variant): ResNet with one bottleneck per stage at base
width 16, one non-local block in layer2 and one in layer3 (where the preset has
them), 64x32 inputs, P=8 x K=4 samples of T=4 frames, Adam lr 1e-3 (every
preset: a shared schedule, not each paper's), x0.1 at 70% and 90% of the run's
steps, weight decay as in the preset. Each preset keeps its losses, M and
sampling (vkd: M=2 set embeddings, multi-view; T is 4 for all, not VKD's 8, so
every run sees the same frames per step).

Benchmark protocol, fixed before any method was compared:
  * data: `data_prep.synthetic.BENCHMARK` (128 training ids; test: 300 ids seen
    by 3 of 6 cameras, 300 distractor tracklets, heavy occlusion and pose change);
  * start: every network's trunk from one pre-training run; ``reid`` (the
    first benchmark): student_only, 600 steps on `data_prep.synthetic.PRETRAIN`,
    512 identities disjoint from the benchmark's; ``generic`` (classification
    of generated object categories) and ``scratch`` (random weights);
  * budget: TOTAL steps for every method; the two-stage ones (vkd, and mdkt
    after a teacher stage) spend half in a teacher stage and half after it;
  * seeds 0-4, paired (seed s: same data order and initial weights everywhere);
    differences to student_only and vkd with 95% t-intervals (the report adds
    tkp, the strongest baseline);
  * every KD method is also evaluated with the other gallery encoder.
Times on a 2-core AMD EPYC CPU (docs/benchmark.md, bench/RESULTS.md): the
quickstart command, install and dataset build included, 8.5 minutes (5 without
the install); a benchmark run 1-5 minutes (median 3.7) with two
runs sharing the box (--jobs=2), one seed of the sweep about 45 minutes
(bench/ablation/synthetic_cpu.jsonl records each run's minutes).
"""

from configs import base
from i2v_jax import defaults

PRESETS = base.PRESETS  # the same preset= argument
STEPS = 150          # the quickstart run
TOTAL = 300          # the benchmark's budget per method
STAGE = TOTAL // 2   # each stage of a two-stage method
DATA = 'benchmark'   # data_prep.synthetic.SPECS name the sweep builds


def get_config(arg=None):
  c = base.get_config(arg)
  c.unlock()
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width = 16
  c.model.nonlocal_blocks.layer2 = (0,)
  c.model.nonlocal_blocks.layer3 = (0,)
  c.input.height, c.input.width = 64, 32
  c.input.pad_crop = 4
  c.input.clip_len = 4
  c.train.num_steps = STEPS
  c.train.log_every = 20
  c.train.eval_every = STEPS
  c.train.checkpoint_every = STEPS
  c.optim.lr = 1e-3
  c.optim.decay_at = (0.7, 0.9)
  c.eval.clip_len = 8
  c.eval.batch_size = 16
  c.lock()
  return c


def _steps(n):
  return {'train.num_steps': n, 'train.eval_every': n, 'train.checkpoint_every': n}


def starts():
  """The starts the sweep compares methods from (``--starts``), each fixed before
  any method was compared on it: name -> its pre-training, or None (random
  initialisation of both networks). A pre-training trains the image network on
  a pool disjoint from the benchmark for 600 steps and exports its trunk into
  both networks of every variant (non-local blocks start fresh).

    reid     student_only (ID + triplet) on `data_prep.synthetic.PRETRAIN`:
             512 synthetic people: identity features (the first benchmark's start).
    generic  classification only (ID loss) on `data_prep.objects.GENERIC`: 300
             generated object categories, no person: generic features, the
             stand-in for ImageNet.
    scratch  random weights.
  """
  classify = {'loss.triplet.student': 0.0}
  return {
      'reid': {'dataset': 'synthetic', 'data': 'pretrain', 'arg': 'preset=student_only',
               'steps': 600, 'overrides': _steps(600), 'network': 'student', 'seed': 0},
      'generic': {'dataset': 'objects', 'data': 'generic',
                  'arg': 'preset=student_only,dataset=objects',
                  'steps': 600, 'overrides': dict(_steps(600), **classify),
                  'network': 'student', 'seed': 0},
      'scratch': None,
  }


def sweep():
  """The benchmark's variants: {'name', 'arg', 'overrides', 'steps', 'about'}."""
  config = get_config()

  def ablation(name):  # as the method plus its changes: the runs' recorded arguments
    a = defaults.ABLATIONS[name]
    return (name, f'preset={a.method}', a.changes(config), TOTAL, a.about)
  after_stage = {'teacher.checkpoint': '@teacher_stage'}
  runs = [
      # name, arg, overrides, steps, about
      ('student_only', 'preset=student_only', {}, TOTAL, 'the image network alone'),
      ('teacher_only', 'preset=teacher_only', {}, TOTAL, 'the video network alone (non-local); '
       'I2V queries go through it as one-frame clips'),
      ('teacher_stage', 'preset=teacher_only', {}, STAGE, 'teacher_only for half the budget: '
       'the first stage of mdkt_after_teacher'),
      ('vkd_teacher', 'preset=vkd_teacher', {}, STAGE, "VKD's first stage (plain ResNet, "
       'soft-margin triplet), half the budget'),
      ('vkd', 'preset=vkd', {'teacher.checkpoint': '@vkd_teacher'}, STAGE,
       "VKD's second stage from vkd_teacher (frozen teacher on batch statistics, student = "
       'teacher with layer4 and head reset, M=2 set embedding, multi-view), half the budget'),
      ('tkp', 'preset=tkp', {}, TOTAL, 'TKP losses (cross-modal triplets, feature and '
       'distance-matrix terms), joint training'),
      ('mdkt', 'preset=mdkt', {}, TOTAL, 'ID + triplet + TCL + mutual learning, joint from '
       'the pre-trained start'),
      ('mdkt_after_teacher', 'preset=mdkt', after_stage, STAGE,
       'mdkt whose teacher starts from teacher_stage and trains on (joint), half the budget: '
       'the equal-terms comparison with vkd'),
      # The ablations: one table with preset=<name> (i2v_jax.defaults.ABLATIONS).
      *(ablation(name) for name in defaults.ABLATIONS),
  ]
  # Every KD method with the other gallery encoder (evaluate mode, no training).
  other = {'tkp': 'student', 'mdkt': 'teacher', 'mdkt_after_teacher': 'teacher',
           'vkd': 'teacher', 'mdkt_shared_classifier': 'teacher',
           'mdkt_cross_tcl': 'teacher'}
  evals = []
  for name, encoder in other.items():
    arg, overrides, steps = next((a, o, s) for n, a, o, s, _ in runs if n == name)
    evals.append((f'{name}_{encoder}_gallery', arg,
                  dict(overrides, **{'mode': 'evaluate', 'eval.from_workdir': f'@{name}',
                                     'eval.gallery_encoder': encoder}), steps,
                  f'the {name} runs evaluated with the {encoder} encoding gallery videos'))
  # Every run also measures how far the two networks agree (linear CKA, distance
  # rank correlation; i2v_jax.evaluation.evaluators): nothing in one-network runs.
  return [dict(name=n, arg=a, overrides=dict(_steps(s), **{'eval.agreement': True}, **o),
               about=t, steps=s)
          for n, a, o, s, t in runs + evals]
