r"""The config's schema: every key, its default and its meaning, and the methods
table (`PRESETS`). The library resolves every config from here: the command
line's experiment files (``configs/*.py`` start from `get_config` and state only
what differs), a run's saved ``config.json`` (keys added since it was saved take
these defaults: `i2v_jax.config_lib.load_saved`) and ``i2v_jax.load``.

The comment beside each key's default is its meaning: ``docs/config.md`` is
generated from them (``python -m configs.reference``), so a key without one
fails a test.

Presets (docs/method.md §4; weights are the terms' multipliers, 0 turns a term off):
  mdkt          ID + batch-hard triplet on both networks, TCL teacher->student,
                mutual learning (logit KL both ways + reverse TCL, loss.tcl.reverse).
                Joint training.
  tkp           ID + triplet on both networks + TKP cross-modal triplets + TKP
                feature and distance-matrix terms (Gu et al., ICCV 2019).
  vkd           VKD's second stage (Porrello et al., ECCV 2020; aimagelab/VKD
                tools/train_distill.py), see `_vkd` for each setting.
  vkd_teacher   VKD's first stage: teacher_only with VKD's network and triplet.
  teacher_only  the video network alone.
  student_only  the image network alone: the baseline every transfer must beat.
  mean_teacher  mdkt plus an EMA copy of the student (a third network, ``student_ema``)
                that the student learns from by logit KL and TCL (Tarvainen & Valpola,
                NeurIPS 2017): the worked example of a method with another network
                (docs/extending.md).
"""

import dataclasses
from typing import Any, Callable, Dict

import ml_collections

from i2v_jax.datasets import DATASETS


def get_config(preset: str = 'mdkt', dataset: str = 'synthetic', runlocal: bool = False
               ) -> ml_collections.ConfigDict:
  """The locked config of ``preset`` on ``dataset`` (``runlocal``: shrunk for a smoke run)."""
  if preset not in PRESETS and preset not in ABLATIONS:
    raise ValueError(f'config argument preset={preset!r}: choose one of {tuple(PRESETS)} '
                     f'or an ablation of one: {tuple(ABLATIONS)}')
  if dataset not in DATASETS:
    raise ValueError(f'config argument dataset={dataset!r}: choose one of {tuple(DATASETS)}')
  c = ml_collections.ConfigDict()
  c.preset = preset  # set by the preset= argument; recorded for the log
  c.seed = 0  # parameter init and every sampling choice (batch of step s = f(seed, s))
  c.mode = 'train'  # train | evaluate (a checkpoint of the workdir) | print (the config)

  # Which networks exist in this run. Teacher-only / student-only presets drop one.
  c.networks = ('teacher', 'student')  # which networks exist; one-network presets drop one

  c.data = ml_collections.ConfigDict()
  c.data.name = dataset  # synthetic | mars | duke | veri (the dataset= argument)
  c.data.dir = ''  # TFRecords + metadata.json from `python -m data_prep.build`;
                   # '' with synthetic: built into <workdir>/data

  # docs/method.md §3. Batch = P identities x K tracklets; clips of T frames; M student images.
  c.input = ml_collections.ConfigDict()
  c.input.height = 256           # resize size (VeRi 224 x 224)
  c.input.width = 128            # resize size
  c.input.num_ids = 8            # P
  c.input.tracklets_per_id = 4   # K
  c.input.clip_len = 4           # T, restricted random sampling
  c.input.student_frames = 4     # M <= T; image k is frame k of the clip
  c.input.sampling = 'restricted'  # restricted: T frames of one tracklet (TKP) |
                                   # multiview: frame k from the k-th of a random
                                   # order of the identity's tracklets (VKD)
  c.input.shuffle_frames = False   # clip frames in random order, so the student's
                                   # M images are a random subset (VKD's randperm)
  c.input.flip = True            # same flip for all frames of a clip
  c.input.pad_crop = 10          # pad then random crop back; 0 = off
  c.input.erasing_prob = 0.5     # random erasing; 0 = off
  c.input.normalize = True       # ImageNet mean/std

  # docs/method.md §2.
  c.model = ml_collections.ConfigDict()
  c.model.stage_sizes = (3, 4, 6, 3)  # bottlenecks per stage: ResNet-50
  c.model.width = 64                  # base width (ResNet-50: 64)
  c.model.last_stride = 1             # 1 for re-ID, 2 = torchvision
  c.model.dtype = 'float32'           # float32 | bfloat16 (compute; params stay fp32)
  c.model.pretrained = ''             # .npz from i2v_jax.models.convert / export; '' = random
  c.model.shared_classifier = False   # one ID classifier for both networks (TKP)
  c.model.nonlocal_blocks = ml_collections.ConfigDict()
  c.model.nonlocal_blocks.enabled = True    # the teacher's non-local blocks (TKP); off: VKD
  c.model.nonlocal_blocks.layer1 = ()       # 0-based blocks of each stage followed by one
  c.model.nonlocal_blocks.layer2 = (1, 3)   # after the 2nd and 4th blocks (TKP)
  c.model.nonlocal_blocks.layer3 = (1, 3, 5)  # after the 2nd, 4th and 6th blocks (TKP)
  c.model.nonlocal_blocks.layer4 = ()       # (see layer1)

  # docs/method.md §4. Each weight multiplies one logged term.
  c.loss = ml_collections.ConfigDict()
  c.loss.student_level = 'frame'  # frame: each student image is a row | set: the M
                                  # images of a sample are one set embedding (VKD)
  c.loss.id = ml_collections.ConfigDict()
  c.loss.id.teacher = 1.0                   # cross-entropy on the teacher's logits
  c.loss.id.student = 1.0                   # cross-entropy on the student's logits
  c.loss.id.label_smoothing = 0.0           # epsilon
  c.loss.triplet = ml_collections.ConfigDict()
  c.loss.triplet.teacher = 1.0              # clip features, teacher space
  c.loss.triplet.student = 1.0              # image features, student space
  c.loss.triplet.student_to_teacher = 0.0   # TKP cross-modal: student anchors
  c.loss.triplet.teacher_to_student = 0.0   # TKP cross-modal: teacher anchors
  c.loss.triplet.margin = 0.3               # batch-hard margin
  c.loss.triplet.soft_margin = False        # log(1 + exp(d_ap - d_an)) instead (VKD)
  c.loss.triplet.distance = 'euclidean'     # euclidean | cosine
  c.loss.tcl = ml_collections.ConfigDict()
  c.loss.tcl.weight = 1.0            # TCL teacher -> student
  c.loss.tcl.reverse = 0.5           # reverse TCL KL(sg(pi_S) || pi_T), part of mutual
                                     # learning; 0 = one-way TCL ("Besides the TCL loss,
                                     # we adopt mutual learning": logit ML only)
  c.loss.tcl.temperature = 0.1       # tau_S (and tau_T unless teacher_temperature)
  c.loss.tcl.teacher_temperature = 0.0  # tau_T; 0 = temperature. tau_T < tau_S: a sharper
                                        # teacher target (the "contrast" reading)
  c.loss.tcl.num_negatives = 1       # 1 = hardest pair; k>1 = all positives + k nearest negatives
  c.loss.tcl.neighbours = 0          # k>0: neighbourhood TCL, the anchor's k nearest
                                     # candidates by the teacher, whatever their identity
                                     # ("the local structure consisting of nearest neighbors")
  c.loss.tcl.feature = 'features'    # features (before the BN-neck) | bn_features (after
                                     # it; needs teacher_level=clip)
  c.loss.tcl.mine_on = 'teacher'     # teacher | student
  c.loss.tcl.teacher_level = 'frame'  # frame | clip
  c.loss.tcl.distance = 'cosine'     # cosine | euclidean
  c.loss.tcl.distance_scale = 'none'  # none | mean: divide each network's distances by
                                      # their batch mean (needed for euclidean)
  c.loss.tcl.cross_network = False   # student side: d(s_anchor, teacher candidates)
  c.loss.mutual = ml_collections.ConfigDict()
  c.loss.mutual.student_from_teacher = 1.0  # tau^2 KL(sg(s(z_T/tau)) || s(z_S/tau))
  c.loss.mutual.teacher_from_student = 1.0  # tau^2 KL(sg(s(z_S/tau)) || s(z_T/tau))
  c.loss.mutual.temperature = 1.0           # tau_m
  c.loss.tkp = ml_collections.ConfigDict()
  c.loss.tkp.feature = 0.0      # TKP: mean_k |s_k - sg(t_k)|^2
  c.loss.tkp.distance = 0.0     # TKP: mean_kl (D^S_kl - sg(D^T_kl))^2
  c.loss.vkd = ml_collections.ConfigDict()
  c.loss.vkd.logits = 0.0       # VKD: tau^2 KL(s(z_T/tau) || s(z_S/tau))
  c.loss.vkd.temperature = 10.0  # VKD's tau
  c.loss.vkd.distance = 0.0     # VKD: pairwise squared-distance MSE (x 1/2)
  c.loss.mean_teacher = ml_collections.ConfigDict()
  c.loss.mean_teacher.logits = 0.0  # tau^2 KL(sg(s(z_EMA/tau)) || s(z_S/tau)), networks student_ema
  c.loss.mean_teacher.tcl = 0.0     # TCL with the EMA student's features as the teacher side
  c.loss.mean_teacher.temperature = 1.0  # tau of the logit term

  # An exponential moving average network (networks entry student_ema).
  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.99  # e <- d e + (1 - d) theta after every step (params and running averages)

  c.teacher = ml_collections.ConfigDict()
  c.teacher.mode = 'joint'    # joint | frozen
  c.teacher.checkpoint = ''   # workdir of a teacher_only run: frozen mode loads it and
                              # keeps it fixed; joint mode starts from it and trains on
  c.teacher.init_student = False  # the student starts as a copy of that teacher (VKD)
  c.teacher.reinit_student_layer4 = False  # then layer4 back to model.pretrained's (or
                                           # random) and a fresh head (VKD's reinit_l4)
  c.teacher.bn_mode = 'running'  # frozen teacher's BatchNorm: running statistics |
                                 # batch: this batch's, running ones untouched (VKD)

  # docs/method.md §5.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.mining_scope = 'global'  # global | local
  c.parallel.bn_scope = 'local'       # local (DDP) | global (moments over `data`)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'         # adam (L2 decay in the gradient, TKP/VKD) | adamw
  c.optim.lr = 3.5e-4           # peak learning rate
  c.optim.weight_decay = 5e-4   # L2 (adam) or decoupled (adamw)
  c.optim.warmup_steps = 0      # linear warm-up steps
  c.optim.schedule = 'multistep'  # multistep | cosine
  c.optim.decay_at = (0.4, 0.8)   # fractions of num_steps (TKP: epochs 60/120 of 150)
  c.optim.decay_factor = 0.1    # multistep: lr x this at each decay point
  c.optim.teacher_lr_scale = 1.0  # the teacher's lr multiplier
  c.optim.student_lr_scale = 1.0  # the student's lr multiplier
  c.optim.grad_clip = 0.0         # global-norm clip; 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 11_850      # 150 epochs of the dataset (dataset= sets it)
  c.train.log_every = 20         # steps between metric lines
  c.train.eval_every = 2_000     # steps between evaluations (and at the last step)
  c.train.checkpoint_every = 1_000  # steps between checkpoints (and at the last step)
  c.train.keep_checkpoints = 2   # latest checkpoints kept (>= 1)
  c.train.best_metric = 'i2v/mAP'  # evaluation metric that picks checkpoints_best/

  # docs/method.md §1.
  c.eval = ml_collections.ConfigDict()
  c.eval.distance = 'cosine'        # cosine | euclidean
  c.eval.ap_mode = 'trapezoid'      # trapezoid (MARS kit, TKP, VKD) | standard
  c.eval.feature = 'features'       # features (before BN-neck) | bn_features
  c.eval.gallery_encoder = 'teacher'  # teacher | student, for video entries (mdkt, vkd: student)
  c.eval.query_frame = 'first'      # first | middle
  c.eval.clip_len = 32              # frames per gallery chunk
  c.eval.max_frames = 0             # 0 = every frame; N = N evenly spaced frames
  c.eval.batch_size = 16            # clips (or images) per device per step
  c.eval.protocols = ('i2v', 'v2v', 'i2i', 'v2i')  # which protocols to report
  c.eval.max_rank = 20              # CMC length
  c.eval.query_block = 256          # queries ranked at once on the device
  c.eval.rerank = False             # also report k-reciprocal re-ranking (Zhong et al. 2017)
  c.eval.rerank_k1 = 20             # k-reciprocal neighbours
  c.eval.rerank_k2 = 6              # query expansion neighbours
  c.eval.rerank_lambda = 0.3        # weight of the original distance
  c.eval.checkpoint = 'latest'      # mode=evaluate: latest | best | a step number
  c.eval.from_workdir = ''          # mode=evaluate: read checkpoints here, write to --workdir
  c.eval.tag = ''                   # mode=evaluate: results in eval/<step>-<checkpoint>-<tag>/
  c.eval.export = False             # write features-<split>-<kind>.npz to the workdir
  c.eval.visualize = 0              # N > 0: ranked_<protocol>.png of the N worst-AP queries
  c.eval.visualize_top = 10         # gallery entries shown per query
  c.eval.visualize_queries = ()     # query tracklet names to draw instead of the worst
  c.eval.agreement = False          # agreement/*: linear CKA and distance Spearman of two networks
  c.eval.agreement_networks = ('teacher', 'student')  # the two networks agreement compares
  c.eval.heldout = False            # heldout/*: classifier accuracy on held-out training-class images
  c.eval.final_only = ()            # evaluators (evaluation.EVALUATORS) run at the final step only

  _apply_dataset(c, dataset)
  ablation = ABLATIONS.get(preset)
  PRESETS[ablation.method if ablation else preset](c)
  if runlocal:
    _apply_runlocal(c)
  if ablation:  # last: an ablation's keys are the method's, whatever the size
    for key, value in ablation.changes(c).items():
      *groups, leaf = key.split('.')
      node = c
      for g in groups:
        node = node[g]
      node[leaf] = value
  c.lock()
  return c


def _apply_dataset(c, name):
  d = DATASETS[name]
  c.input.height, c.input.width = d.height, d.width
  c.train.num_steps = 150 * d.steps_per_epoch(c.input.num_ids)  # 150 epochs


def _transfer_off(loss):
  """No term that couples the two networks (TCL, mutual learning)."""
  loss.tcl.weight = 0.0
  loss.mutual.student_from_teacher = loss.mutual.teacher_from_student = 0.0
  loss.tcl.reverse = 0.0


def _mdkt(c):
  """ID + batch-hard triplet on both networks, TCL, mutual learning: the defaults."""
  # Nothing ties the student's feature space to the teacher's in this recipe
  # (TKP's feature term does), so the student encodes gallery videos too, as in
  # VKD. On the synthetic benchmark a teacher-encoded gallery puts mdkt's I2V at
  # chance (docs/benchmark.md, rows *_teacher_gallery).
  c.eval.gallery_encoder = 'student'


def _tkp(c):
  """TKP: cross-modal triplets, feature and distance-matrix terms, joint training."""
  _transfer_off(c.loss)
  c.loss.triplet.student_to_teacher = c.loss.triplet.teacher_to_student = 1.0
  c.loss.tkp.feature = c.loss.tkp.distance = 1.0
  c.optim.lr = 3e-4


def _one_network(c, keep):
  _transfer_off(c.loss)
  drop = 'student' if keep == 'teacher' else 'teacher'
  c.networks = (keep,)
  c.loss.id[drop] = c.loss.triplet[drop] = 0.0
  if keep == 'student':
    c.eval.gallery_encoder = 'student'
    c.model.nonlocal_blocks.enabled = False


def _vkd_teacher(c):
  """VKD tools/train_v2v.py: plain ResNet-50 with frame averaging, soft-margin
  batch-hard triplet (OnlineTripletLoss('soft', batch_hard=True)), 8 frames by
  restricted random sampling ('chunk'), Adam lr 1e-4 with L2 1e-5, x0.1 at epochs
  200 and 250 of 300. P x K as in `_vkd`."""
  _one_network(c, 'teacher')
  c.model.nonlocal_blocks.enabled = False
  c.loss.triplet.soft_margin = True
  c.input.clip_len = 8
  c.optim.lr = 1e-4
  c.optim.weight_decay = 1e-5
  c.optim.decay_at = (2 / 3, 5 / 6)


def _vkd(c):
  """VKD's distillation stage, checked against aimagelab/VKD tools/train_distill.py.

  Same as VKD:
    * teacher frozen (``teacher.mode=frozen``, a ``vkd_teacher`` run), plain
      ResNet-50 without non-local blocks, its BatchNorm on the batch's statistics
      without updating running ones (``teacher_mode()``: ``teacher.bn_mode=batch``);
    * student = a copy of the teacher with layer4 reset to the ImageNet (here
      ``model.pretrained``) weights and a fresh BN-neck + classifier
      (``reinit_layers(reinit_l4=True)``);
    * the student's M=2 images form one set embedding (mean of the per-image
      embeddings) with set logits (mean of per-image logits); ID, soft-margin
      batch-hard triplet, logit KL (τ=10, weight 0.1) and squared-distance MSE
      (½·MSE, weight 1e-4) all on one row per sample against the teacher's clip
      embedding and logits (``loss.student_level=set``);
    * multi-view sampling (frame k of a sample from the k-th tracklet of a random
      order of the identity's tracklets, ``input.sampling=multiview``), 8 frames
      per sample, the student's 2 chosen at random among them
      (``input.shuffle_frames``);
    * Adam lr 1e-4 with L2 weight decay 1e-5 in the gradient; ×0.1 at epochs 300
      and 350 of 400 (``optim.decay_at=(0.75, 0.875)`` of ``train.num_steps``).
  Differs from VKD:
    * P×K = 8×4 (VKD: 18×4): P must divide evenly over devices (each device
      holds whole identities); set ``input.num_ids=18`` on 1, 2, 3, 6 or 9 devices.
    * VKD's teacher logits average per-frame logits; ours classify the clip
      feature (our teacher's head, shared with every other preset).
    * VKD's classifier BN-neck is re-initialised with Kaiming init; ours with the
      same init as every head here (BN scale 1, classifier N(0, 0.001²)), as VKD's
      ``ClassificationLayer`` also does for the classifier.
  """
  c.eval.gallery_encoder = 'student'  # as VKD; see `_mdkt`
  loss = c.loss
  _transfer_off(loss)
  loss.id.teacher = loss.triplet.teacher = 0.0
  loss.triplet.soft_margin = True
  loss.student_level = 'set'
  loss.vkd.logits, loss.vkd.distance = 0.1, 1e-4
  c.input.clip_len = 8
  c.input.student_frames = 2
  c.input.sampling = 'multiview'
  c.input.shuffle_frames = True
  c.model.nonlocal_blocks.enabled = False
  c.teacher.mode = 'frozen'
  c.teacher.init_student = True
  c.teacher.reinit_student_layer4 = True
  c.teacher.bn_mode = 'batch'
  c.optim.lr = 1e-4
  c.optim.weight_decay = 1e-5
  c.optim.decay_at = (0.75, 0.875)


def _mean_teacher(c):
  """mdkt plus a mean teacher: ``student_ema``, the student's weights averaged
  over steps (decay ``ema.decay``), a third network the student learns from by
  logit KL and TCL beside the video teacher. Evaluated with the student."""
  _mdkt(c)
  c.networks = ('teacher', 'student', 'student_ema')
  c.loss.mean_teacher.logits = 1.0
  c.loss.mean_teacher.tcl = 1.0


# The one table of methods: preset name -> the function that turns the defaults
# into that method. A new method is one function and one entry here (and its
# docs entry); the command line, validation and docs/config.md follow from it.
PRESETS = {
    'mdkt': _mdkt,
    'tkp': _tkp,
    'vkd': _vkd,
    'vkd_teacher': _vkd_teacher,
    'teacher_only': lambda c: _one_network(c, 'teacher'),
    'student_only': lambda c: _one_network(c, 'student'),
    'mean_teacher': _mean_teacher,
}



@dataclasses.dataclass(frozen=True)
class Ablation:
  """A method with some of its keys changed: ``preset=<name>`` on the command
  line, and a variant of the benchmark sweep (configs/synthetic_cpu.py), one
  table for both. ``changes(config)`` -> {dotted key: value}."""
  method: str
  changes: Callable[[Any], Dict[str, Any]]
  about: str


def _fixed(**changes):
  keys = {k.replace('__', '.'): v for k, v in changes.items()}
  return lambda c: dict(keys)


# The ablations of a method. Each value is fixed by what it tests, not tuned.
ABLATIONS = {a_name: a for a_name, a in (
    ('mdkt_no_tcl', Ablation('mdkt', _fixed(loss__tcl__weight=0.0, loss__tcl__reverse=0.0),
                             'mdkt without TCL and reverse TCL')),
    ('mdkt_no_ml', Ablation('mdkt', _fixed(loss__mutual__student_from_teacher=0.0,
                                           loss__mutual__teacher_from_student=0.0,
                                           loss__tcl__reverse=0.0),
                            'mdkt without mutual learning')),
    ('mdkt_tcl_x0.3', Ablation('mdkt', _fixed(loss__tcl__weight=0.3), 'TCL weight 0.3')),
    ('mdkt_tcl_x3', Ablation('mdkt', _fixed(loss__tcl__weight=3.0), 'TCL weight 3')),
    ('mdkt_tcl_x10', Ablation('mdkt', _fixed(loss__tcl__weight=10.0), 'TCL weight 10')),
    ('mdkt_tcl_clip', Ablation('mdkt', _fixed(loss__tcl__teacher_level='clip'),
                               'TCL against the teacher clip features (candidates are '
                               'tracklets)')),
    ('mdkt_tcl_k4', Ablation('mdkt', _fixed(loss__tcl__num_negatives=4),
                             'TCL with all positives and the 4 nearest negatives in one '
                             'softmax')),
    ('mdkt_shared_classifier', Ablation('mdkt', _fixed(model__shared_classifier=True),
                                        'one ID classifier for both networks (TKP)')),
    ('mdkt_cross_tcl', Ablation('mdkt', _fixed(loss__tcl__cross_network=True),
                                "cross-network TCL: the student's distances to the "
                                "teacher's candidates")),
    # Readings of the paper's text that the mdkt preset does not take.
    ('mdkt_one_way', Ablation('mdkt', _fixed(loss__tcl__reverse=0.0),
                              'one-way TCL plus logit mutual learning ("Besides the TCL loss, '
                              'we adopt mutual learning"): no reverse TCL')),
    ('mdkt_tcl_nbr', Ablation(
        'mdkt', lambda c: {'loss.tcl.neighbours':
                           c.input.tracklets_per_id * c.input.student_frames - 1},
        'neighbourhood TCL ("the local structure consisting of nearest neighbors for each '
        'example"): the teacher\'s softmax over the anchor\'s K*M - 1 nearest frames '
        'whatever their identity (as many as its positives)')),
    ('mdkt_tcl_sharp', Ablation('mdkt', _fixed(loss__tcl__teacher_temperature=0.05),
                                'sharper teacher target (the "contrast" reading): teacher '
                                'temperature 0.05, half the student\'s 0.1')),
    ('mdkt_tcl_bnneck', Ablation('mdkt', _fixed(loss__tcl__feature='bn_features',
                                                loss__tcl__teacher_level='clip'),
                                 'TCL on the BN-neck features (the space the ID loss shapes), '
                                 'at clip level (compare mdkt_tcl_clip)')),
)}


def _apply_runlocal(c):
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width = 8
  c.model.nonlocal_blocks.layer2 = (0,)
  c.model.nonlocal_blocks.layer3 = (0,)
  c.input.height, c.input.width = 64, 32
  c.input.num_ids, c.input.tracklets_per_id = 4, 2
  c.input.pad_crop = 4
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.eval_every = 20
  c.train.checkpoint_every = 10
  c.eval.clip_len = 8
  c.eval.batch_size = 8
