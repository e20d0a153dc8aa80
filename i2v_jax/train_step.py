"""Train state, optimizer and the sharded train step (docs/method.md §5).

The step is written once as per-device code over the mesh axis ``data`` and
compiled with ``jax.jit(jax.shard_map(...))``: the semantics of a pmapped step.
Each device holds P/n whole identities x K tracklets.

* ``mining_scope='global'``: embeddings and labels are all-gathered over
  ``data``; each device scores its own anchors against the whole batch.
* ``bn_scope='global'``: BatchNorm moments are averaged over ``data``; ``local``
  normalises with per-device moments (PyTorch DDP). Either way the running
  averages are averaged over devices after the step, so replicas stay identical.
* Gradients: the differentiated objective is ``lax.pmean(device_loss, 'data')``,
  the mean over devices of per-device means. Under shard_map's typing the gradient
  of that w.r.t. the replicated parameters is the all-reduced mean gradient
  (pmean of per-device gradients) — with global/global, exactly the gradient of
  the one-device loss on the same global batch (`tests/test_train_step.py`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from i2v_jax import checkpoint, input_pipeline, networks as networks_lib
from i2v_jax.losses import objective
from i2v_jax.models import convert

AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  """Everything a step changes, as one pytree, and what built it.

  ``params``/``batch_stats``/``opt_state`` cover the trained networks, keyed by
  name ('teacher', 'student'). ``frozen`` holds the variables
  (``{'params', 'batch_stats'}``) of every network the optimizer does not
  update: a frozen teacher (never changed) and an EMA network (replaced by its
  average after each step); empty when there is none. The networks table
  (`i2v_jax.networks`, with each entry's module), the optimizer and its schedule
  travel with the arrays as static fields (not saved in checkpoints), as flax's
  ``train_state`` carries ``apply_fn`` and ``tx``: the step uses the optimizer
  that made ``opt_state``, and nobody rebuilds either.
  """
  step: jnp.ndarray
  params: Dict[str, Any]
  batch_stats: Dict[str, Any]
  opt_state: Any
  frozen: Dict[str, Any]
  networks: Tuple[networks_lib.Network, ...] = flax.struct.field(pytree_node=False, default=())
  tx: Any = flax.struct.field(pytree_node=False, default=None)  # optax.GradientTransformation
  schedule: Any = flax.struct.field(pytree_node=False, default=None)  # step -> lr

  def network(self, name: str):
    """The flax module of network ``name``."""
    return {net.name: net.module for net in self.networks}[name]


def trained_networks(config: ml_collections.ConfigDict) -> Tuple[str, ...]:
  """The networks the optimizer updates (`i2v_jax.networks.trained`)."""
  return networks_lib.trained(config)


def learning_rate(config: ml_collections.ConfigDict) -> Callable[[Any], Any]:
  """Linear warmup (from 0.1 x lr) then multistep or cosine decay, per step."""
  o = config.optim
  total = config.train.num_steps

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = (jnp.minimum(1.0, 0.1 + 0.9 * step / o.warmup_steps)
            if o.warmup_steps else 1.0)
    if o.schedule == 'multistep':
      passed = sum((step >= round(f * total)).astype(jnp.float32) for f in o.decay_at)
      decay = o.decay_factor ** passed
    elif o.schedule == 'cosine':
      t = jnp.clip((step - o.warmup_steps) / max(total - o.warmup_steps, 1), 0.0, 1.0)
      decay = 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    else:
      raise ValueError(f'config optim.schedule={o.schedule!r}: multistep or cosine')
    return o.lr * warm * decay

  return schedule


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with L2 decay added to the gradient (TKP/VKD) or AdamW; per-network lr scale."""
  o = config.optim
  schedule = learning_rate(config)

  def network_tx(scale):
    lr = lambda step: scale * schedule(step)
    if o.name == 'adam':
      return optax.chain(optax.add_decayed_weights(o.weight_decay), optax.adam(lr))
    if o.name == 'adamw':
      return optax.adamw(lr, weight_decay=o.weight_decay)
    raise ValueError(f'config optim.name={o.name!r}: adam or adamw')

  table = networks_lib.table(config)
  names = trained_networks(config)
  tx = optax.multi_transform({n: network_tx(table[n].lr_scale) for n in names},
                             {n: n for n in names})
  if o.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over ``devices`` (default: all) with the axis ``data``.

  Auto axis type (``jax.make_mesh`` defaults to Explicit): the step is written
  as per-device code inside ``shard_map``, which needs no sharding-in-types.
  """
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def build_networks(config, num_classes: int) -> Dict[str, networks_lib.Network]:
  """The run's networks table with each entry's flax module for ``num_classes``
  identities, BatchNorm moments averaged over the mesh axis with
  ``parallel.bn_scope=global``."""
  axis = AXIS if config.parallel.bn_scope == 'global' else None
  return {net.name: net for net in networks_lib.build(config, num_classes, axis)}


def check_pretrained(config, num_classes: int, pretrained) -> None:
  """``pretrained`` (``model.pretrained``'s arrays, `convert.load_npz`) fits every
  configured network exactly (`convert.check_backbone`), from abstract shapes: no
  backend, no compilation. An EMA network is a copy, so it is not checked."""
  inp = config.input
  views = jax.eval_shape(lambda x: networks_lib.views(x, 1), jax.ShapeDtypeStruct(
      (1, inp.clip_len, inp.height, inp.width, 3), jnp.float32))
  for net in build_networks(config, num_classes).values():
    if net.role == 'ema':
      continue
    shapes = jax.eval_shape(lambda x, model=net.module: model.init(
        jax.random.key(0), x, train=False), views[net.view])
    convert.check_backbone(shapes, pretrained, source=f'config model.pretrained='
                           f'{config.model.pretrained} ({net.name})')


def init_variables(config, num_classes: int, rng) -> Dict[str, Dict[str, Any]]:
  """{name: {'params', 'batch_stats'}} for every network of config.networks but
  the EMA ones (copies of their network, made by `create_train_state`)."""
  inp = config.input
  views = networks_lib.views(
      jnp.zeros((1, inp.clip_len, inp.height, inp.width, 3), jnp.float32), 1)
  out = {}
  for net in build_networks(config, num_classes).values():
    if net.role == 'ema':
      continue
    name, model, x = net.name, net.module, views[net.view]
    # Init with running averages so no BatchNorm axis needs to be bound. The key
    # depends on the network's name, not its position in config.networks, so one
    # seed gives the student the same weights in student_only as in mdkt (paired seeds).
    variables = jax.jit(lambda r, x, model=model: model.init(r, x, train=False))(
        jax.random.fold_in(rng, net.init_key), x)
    variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
    if config.model.pretrained:
      variables = convert.merge_backbone(variables, convert.load_npz(config.model.pretrained),
                                         source=config.model.pretrained)
    out[name] = variables
  return out


def check_same_layout(loaded, expected, source: str) -> None:
  """Raises if ``loaded`` variables do not have exactly ``expected``'s leaves and shapes.

  Flax ignores unused parameters, so a teacher trained with non-local blocks would
  otherwise run silently without them.
  """
  got = {jax.tree_util.keystr(p): np.shape(x)
         for p, x in jax.tree_util.tree_leaves_with_path(loaded)}
  want = {jax.tree_util.keystr(p): np.shape(x)
          for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  if got != want:
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    shapes = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    raise checkpoint.CheckpointMismatch(
        f'teacher checkpoint {source!r} does not match config.model: '
        f'{len(extra)} extra leaves (e.g. {extra[:1]}), {len(missing)} missing '
        f'(e.g. {missing[:1]}), {len(shapes)} of other shape (e.g. {shapes[:1]}). '
        'Train the teacher_only run with the same model settings (for VKD: '
        '--config.model.nonlocal_blocks.enabled=False), or change config.model.')


BN_MODES = ('running', 'batch')
TEACHER_MODES = ('joint', 'frozen')
MINING_SCOPES = ('global', 'local')
BN_SCOPES = ('local', 'global')
OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('multistep', 'cosine')
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'teacher.mode': TEACHER_MODES, 'teacher.bn_mode': BN_MODES,
                  'parallel.mining_scope': MINING_SCOPES, 'parallel.bn_scope': BN_SCOPES,
                  'optim.name': OPTIMIZERS, 'optim.schedule': SCHEDULES}


def _reinit_student_layer4(student, fresh):
  """VKD's ``reinit_layers(reinit_l4=True)``: ``student`` with its last stage and
  its head taken from ``fresh`` (the model.pretrained or random initialisation)."""
  last = f'layer{max(int(k[5]) for k in fresh["params"]["backbone"] if k.startswith("layer"))}_'
  out = {}
  for collection in ('params', 'batch_stats'):
    backbone = dict(student[collection]['backbone'])
    backbone.update({k: v for k, v in fresh[collection]['backbone'].items()
                     if k.startswith(last)})
    out[collection] = dict(student[collection], backbone=backbone,
                           head=fresh[collection]['head'])
  return out


def create_train_state(config, num_classes: int, rng,
                       teacher_variables: Optional[Dict[str, Any]] = None, *,
                       restore_target: bool = False) -> TrainState:
  """A fresh state.

  With ``restore_target`` the state is only the shape of a checkpoint about to be
  restored into it (which holds every array, a frozen teacher's too): without
  ``teacher_variables`` the teacher's fresh initialisation stands in for them.

  ``teacher_variables`` (``{'params', 'batch_stats'}`` of a teacher_only run,
  `checkpoint.load_teacher`) must be given when ``config.teacher.checkpoint`` is
  set: ``teacher.mode=frozen`` keeps them fixed (VKD stage 2); ``joint`` starts
  the teacher from them and trains it on (mdkt after a teacher stage). Either
  way ``teacher.init_student`` starts the student as a copy of that teacher
  (and ``teacher.reinit_student_layer4`` then resets its last stage and head).
  """
  variables = init_variables(config, num_classes, rng)
  networks = trained_networks(config)
  t = config.teacher
  if t.mode not in TEACHER_MODES:
    raise ValueError(f'config teacher.mode={t.mode!r}: choose one of {TEACHER_MODES}')
  if t.bn_mode not in BN_MODES:
    raise ValueError(f'config teacher.bn_mode={t.bn_mode!r}: choose one of {BN_MODES}')
  if config.model.shared_classifier and {'teacher', 'student'} - set(networks):
    raise ValueError('config model.shared_classifier=True needs both networks trained '
                     f'jointly (teacher.mode=joint, networks=(teacher, student)); got '
                     f'teacher.mode={t.mode!r}, networks={tuple(config.networks)}')
  has_teacher = 'teacher' in config.networks
  if t.mode == 'frozen' and has_teacher and not t.checkpoint:
    raise ValueError('config teacher.mode=frozen needs the teacher variables of a '
                     'teacher_only run: set --config.teacher.checkpoint=<its workdir>')
  if t.init_student and not (has_teacher and t.checkpoint):
    raise ValueError('config teacher.init_student=True copies a trained teacher: set '
                     '--config.teacher.checkpoint=<workdir of a teacher_only run>')
  frozen = {}
  if has_teacher and t.checkpoint:
    if teacher_variables is None and restore_target:
      teacher_variables = variables['teacher']
    if teacher_variables is None:
      raise ValueError(f'config teacher.checkpoint={t.checkpoint!r} is set but no teacher '
                       'variables were loaded (checkpoint.load_teacher)')
    check_same_layout(teacher_variables, variables['teacher'], t.checkpoint)
    if t.mode == 'frozen':
      frozen = {'teacher': teacher_variables}
    else:
      variables['teacher'] = jax.tree.map(jnp.array, teacher_variables)
    if t.init_student and 'student' in networks:
      # VKD: the student starts from the teacher's weights. Only a teacher without
      # non-local blocks has exactly the student's layout.
      check_same_layout(teacher_variables, variables['student'],
                        f'{t.checkpoint} (as the student, teacher.init_student)')
      student = jax.tree.map(jnp.array, teacher_variables)
      if t.reinit_student_layer4:
        student = _reinit_student_layer4(student, variables['student'])
      variables['student'] = student
  table = build_networks(config, num_classes)
  for net in table.values():
    if net.role == 'ema':  # starts as a copy of the network it averages
      frozen[net.name] = jax.tree.map(jnp.array, variables[net.ema_of])
  params = {n: variables[n]['params'] for n in networks}
  tx = make_optimizer(config)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats={n: variables[n]['batch_stats'] for n in networks},
                    opt_state=tx.init(params), frozen=frozen,
                    networks=tuple(table.values()), tx=tx, schedule=learning_rate(config))


def initial_state(config, num_classes: int, mesh, *, restore_target: bool = False
                  ) -> TrainState:
  """A fresh state replicated over ``mesh``, with ``config.teacher.checkpoint``'s
  teacher loaded (frozen or as the joint teacher's start) when set.

  ``restore_target``: the state will be replaced by a checkpoint of this run (a
  resume, an evaluation), which holds the teacher it trained with; the teacher's
  run folder is then not read, so a VKD student needs only its own folder.
  """
  teacher = None
  if config.teacher.checkpoint and 'teacher' in config.networks and not restore_target:
    teacher = checkpoint.load_teacher(config.teacher.checkpoint)
  state = create_train_state(config, num_classes, jax.random.key(config.seed), teacher,
                             restore_target=restore_target)
  return replicate(state, mesh)


def network_params(params: Dict[str, Any], name: str, shared_classifier: bool):
  """``params[name]``; with a shared classifier the student's head uses the
  teacher's classifier weights (TKP), so gradients of both reach one kernel."""
  if name != 'student' or not shared_classifier:
    return params[name]
  head = dict(params['student']['head'], classifier=params['teacher']['head']['classifier'])
  return dict(params['student'], head=head)


def forward(state: TrainState, params, views: Dict[str, jnp.ndarray],
            shared_classifier: bool = False):
  """Every network of the state's table on its view of the batch.

  A trained network runs in training mode with ``params`` (what is
  differentiated) and its running averages; a frozen or EMA network with its own
  variables, its BatchNorm as its ``bn_mode`` says, and no gradient through it.

  Returns:
    (outputs, batch_stats): {name: the module's output dict}, and the updated
    running averages of the trained networks.
  """
  outputs, stats = {}, {}
  for net in state.networks:
    x = views[net.view]
    if net.role == 'trained':
      own = network_params(params, net.name, shared_classifier)
      out, updates = net.module.apply(
          {'params': own, 'batch_stats': state.batch_stats[net.name]},
          x, train=True, mutable=['batch_stats'])
      outputs[net.name], stats[net.name] = out, updates['batch_stats']
      continue
    variables = state.frozen[net.name]
    if net.bn_mode == 'batch':  # VKD's teacher_mode(): batch moments, running ones kept
      out, _ = net.module.apply(variables, x, train=True, mutable=['batch_stats'])
    else:
      out = net.module.apply(variables, x, train=False)
    outputs[net.name] = jax.lax.stop_gradient(out)
  return outputs, stats


def device_loss_and_grads(state: TrainState, batch, *, config):
  """Per-device code: (state, batch) -> (mean loss, metrics, grads, batch_stats).

  Every network of the table sees its view (`forward`); the configured loss
  terms read them by name (`objective`); the loss is the mean over devices.
  """
  clips, labels = batch['clips'], batch['labels']
  if 'erase' in batch:  # the input pipeline's augmentation draws: applied here, on device
    clips = input_pipeline.augment_clips(clips, batch['flip'], batch['crop'], batch['erase'],
                                         config.input.pad_crop)
  b = labels.shape[0]
  views = networks_lib.views(clips, config.input.student_frames)
  if config.parallel.mining_scope == 'global':
    gather = lambda x: jax.lax.all_gather(x, AXIS, tiled=True)
    offset = jax.lax.axis_index(AXIS) * b
  else:
    gather, offset = (lambda x: x), 0
  names = tuple(net.name for net in state.networks)

  def loss_fn(params):
    outputs, stats = forward(state, params, views, config.model.shared_classifier)
    total, metrics = objective(outputs, labels, config.loss, names, gather=gather,
                               offset=offset)
    return jax.lax.pmean(total, AXIS), (metrics, stats)

  (loss, (metrics, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = jax.lax.pmean(metrics, AXIS)
  stats = jax.lax.pmean(stats, AXIS)  # keep replicas' running averages identical
  return loss, metrics, grads, stats


def ema_update(state: TrainState, params, batch_stats) -> Dict[str, Any]:
  """``state.frozen`` with every EMA network moved towards the network it
  averages: e ← d·e + (1 − d)·θ for its params and running averages, with θ the
  network's values after this step and d its ``ema_decay``."""
  frozen = dict(state.frozen)
  for net in state.networks:
    if net.role == 'ema':
      new = {'params': params[net.ema_of], 'batch_stats': batch_stats[net.ema_of]}
      d = net.ema_decay
      frozen[net.name] = jax.tree.map(lambda e, x, d=d: d * e + (1.0 - d) * x,
                                      state.frozen[net.name], new)
  return frozen


def device_step(state: TrainState, batch, *, config):
  """The step, per device: (state, batch) -> (new state, metrics). Pure: the
  networks and the optimizer come from the state; ``config`` gives the loss."""
  loss, metrics, grads, stats = device_loss_and_grads(state, batch, config=config)
  # The optimizer that made the state's opt_state (it travels with the state).
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  metrics['loss/total'] = loss
  metrics['lr'] = state.schedule(state.step)
  metrics['grad_norm'] = optax.tree.norm(grads)
  metrics['param_norm'] = optax.tree.norm(params)
  return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                       opt_state=opt_state, frozen=ema_update(state, params, stats)), metrics


def _check_step_config(config) -> None:
  m = config.input.student_frames
  if m > config.input.clip_len:
    raise ValueError(f'config input.student_frames={m} exceeds input.clip_len='
                     f'{config.input.clip_len} (student images are clip frames)')
  scope = config.parallel.mining_scope
  if scope not in MINING_SCOPES:
    raise ValueError(f'config parallel.mining_scope={scope!r}: choose one of {MINING_SCOPES}')


def _specs(state_shape):
  return jax.tree.map(lambda _: P(), state_shape)


def make_loss_and_grads(config, mesh):
  """jit(shard_map) of (state, batch) -> (loss, metrics, grads, batch_stats); for tests."""
  _check_step_config(config)
  fn = functools.partial(device_loss_and_grads, config=config)
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS)),
                               out_specs=(P(), P(), P(), P())))


def make_train_step(config, mesh):
  """jit(shard_map(`device_step`)): (state, batch) -> (new state, metrics); state donated.

  ``batch``: {'clips': (B, T, H, W, 3), 'labels': (B,)} sharded over ``data``
  with B = P x K, identities consecutive; B/n must hold whole identities; with
  the input pipeline's ``flip``, ``crop`` and ``erase`` draws, the step applies
  the augmentations first (`input_pipeline.augment_clips`).
  """
  n = mesh.shape[AXIS]
  if config.input.num_ids % n:
    raise ValueError(f'config input.num_ids={config.input.num_ids} must be a multiple '
                     f'of the {n} devices: each device holds whole identities')
  _check_step_config(config)
  step = functools.partial(device_step, config=config)

  def compiled(state, batch):
    specs = _specs(state)
    fn = jax.shard_map(step, mesh=mesh, in_specs=(specs, P(AXIS)),
                       out_specs=(specs, P()))
    return fn(state, batch)

  return jax.jit(compiled, donate_argnums=0)


def replicate(tree, mesh):
  """Places a pytree on every device of the mesh (replicated)."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh):
  """Places a global batch (numpy) split over ``data`` on one process."""
  return jax.device_put(batch, NamedSharding(mesh, P(AXIS)))
