r"""The CPU-sized synthetic benchmark: the quickstart run and the README's ablation.

    python -m i2v_jax.main --config=configs/synthetic_cpu.py --workdir=runs/quickstart
    python -m i2v_jax.sweep --config=configs/synthetic_cpu.py --workdir=runs/ablation \
        --seeds=0,1,2 --jobs=2 --devices=2

``get_config(arg)`` is `configs/base.py`'s config (same arguments: preset=...)
shrunk to the CPU-sized setting below; ``sweep()`` lists the variants. Each
variant trains on the default synthetic dataset (64 training ids, 48 test ids)
and is evaluated I2V / V2V / I2I / V2I at its last step.

CPU-sized setting: ResNet with one bottleneck per stage at base width 16,
one non-local block in layer2 and one in layer3, 64x32 inputs, P=8 x K=4
tracklets of T=4 frames (M=4 student images), 150 steps (about 19 epochs of
the 64 training ids), Adam lr 1e-3 decayed x0.1 at 70% and 90%. On this setting
an mdkt run takes about 2 minutes on one core, student_only about 1.
"""

from configs import base

STEPS = 150


def get_config(arg=None):
  c = base.get_config(arg)
  c.unlock()
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width = 16
  c.model.nonlocal_blocks.layer2 = (0,)
  c.model.nonlocal_blocks.layer3 = (0,)
  c.input.height, c.input.width = 64, 32
  c.input.pad_crop = 4
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


def sweep():
  """The variants of the README table: {'name', 'arg', 'overrides', 'about'}."""
  no_tcl = {'loss.tcl.weight': 0.0, 'loss.mutual.reverse_tcl': 0.0}
  no_ml = {'loss.mutual.student_from_teacher': 0.0, 'loss.mutual.teacher_from_student': 0.0,
           'loss.mutual.reverse_tcl': 0.0}
  runs = [
      ('student_only', 'preset=student_only', {}, 'the image network alone'),
      ('teacher_only', 'preset=teacher_only', {}, 'the video network alone; '
       'I2V queries go through the teacher as one-frame clips'),
      ('tkp', 'preset=tkp', {}, 'TKP losses (cross-modal triplets, feature and '
       'distance-matrix terms), joint training'),
      ('teacher_only_plain', 'preset=teacher_only', {'model.nonlocal_blocks.enabled': False},
       "VKD's first stage: the video network without non-local blocks"),
      ('vkd', 'preset=vkd', {'teacher.checkpoint': '@teacher_only_plain'},
       "VKD's second stage: teacher_only_plain frozen, the student initialised from "
       "it, M=2, VKD's losses"),
      ('mdkt', 'preset=mdkt', {}, 'ID + triplet + TCL + mutual learning (defaults)'),
      ('mdkt_no_tcl', 'preset=mdkt', no_tcl, 'mdkt without TCL and reverse TCL'),
      ('mdkt_no_ml', 'preset=mdkt', no_ml, 'mdkt without mutual learning'),
      ('mdkt_xmodal', 'preset=mdkt', {'loss.triplet.student_to_teacher': 1.0,
                                      'loss.triplet.teacher_to_student': 1.0},
       "mdkt plus TKP's cross-modal triplets (student anchors against teacher clips "
       'and the reverse), which tie the two feature spaces together'),
      ('mdkt_teacher_gallery', 'preset=mdkt',
       {'mode': 'evaluate', 'eval.from_workdir': '@mdkt', 'eval.gallery_encoder': 'teacher'},
       'the mdkt runs evaluated with the teacher encoding gallery videos '
       '(no training: evaluate mode on their checkpoints)'),
      ('vkd_teacher_gallery', 'preset=vkd',
       {'mode': 'evaluate', 'eval.from_workdir': '@vkd', 'eval.gallery_encoder': 'teacher',
        'teacher.checkpoint': '@teacher_only_plain'},
       'the vkd runs evaluated with the frozen teacher encoding gallery videos'),
      ('mdkt_tau0.05', 'preset=mdkt', {'loss.tcl.temperature': 0.05}, 'TCL tau = 0.05'),
      ('mdkt_tau0.5', 'preset=mdkt', {'loss.tcl.temperature': 0.5}, 'TCL tau = 0.5'),
      ('mdkt_mining_local', 'preset=mdkt', {'parallel.mining_scope': 'local'},
       'mining inside each of the 2 devices'),
      ('mdkt_bn_global', 'preset=mdkt', {'parallel.bn_scope': 'global'},
       'BatchNorm moments over both devices'),
  ]
  return [dict(name=n, arg=a, overrides=o, about=t, steps=STEPS) for n, a, o, t in runs]
