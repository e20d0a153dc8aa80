r"""The MDKT train step in PyTorch: the reference for bench/train_step.py.

    python bench/torch_reference.py [--ids 2 --k 4] [--runs 5] [--steps 3] [--tiny]
        [--dtype float32|bfloat16] [--compile]

Same architecture and losses as `i2v_jax` with the mdkt preset: Bottleneck
ResNet-50 trunks written out here as torchvision's v1.5 (stride on the 3x3 conv;
written out so that only torch is needed, and so --tiny can shrink the width as
bench/train_step.py does), last stride 1, TKP's non-local blocks (embedded
Gaussian over T x H x W, C/2, 2x2 max-pooled phi/g, zero-initialised W + BN) after
blocks 1, 3 of layer2 and 1, 3, 5 of layer3 in the teacher, temporal mean, BN-neck
+ linear classifier; ID + batch-hard triplet (margin 0.3) on both networks, TCL
(hardest pair mined on teacher frame features, cosine, tau 0.1), both logit KLs
(tau 1), reverse TCL x 0.5; Adam with L2 5e-4. ``--dtype bfloat16`` runs the
step under autocast (parameters stay float32, as in JAX's bfloat16 compute
dtype); ``--compile`` wraps the step in ``torch.compile``. Prints one JSON line:
the median step time, frames/s and the trainable-parameter count (which
bench/train_step.py checks against JAX's to prove it is the same network).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class NonLocal(nn.Module):
  def __init__(self, channels, frames):
    super().__init__()
    inter, self.t = channels // 2, frames
    self.theta = nn.Conv3d(channels, inter, 1)
    self.phi = nn.Conv3d(channels, inter, 1)
    self.g = nn.Conv3d(channels, inter, 1)
    self.w = nn.Sequential(nn.Conv3d(inter, channels, 1), nn.BatchNorm3d(channels))
    nn.init.zeros_(self.w[1].weight)
    nn.init.zeros_(self.w[1].bias)

  def forward(self, x):  # (B*T, C, H, W)
    bt, c, h, w = x.shape
    v = x.reshape(bt // self.t, self.t, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
    pool = lambda y: F.max_pool3d(y, (1, 2, 2))
    theta = self.theta(v).flatten(2).transpose(1, 2)
    phi, g = pool(self.phi(v)).flatten(2), pool(self.g(v)).flatten(2).transpose(1, 2)
    y = torch.softmax((theta @ phi).float(), dim=-1).to(g.dtype) @ g  # (B, THW, C/2)
    y = y.transpose(1, 2).reshape(v.shape[0], -1, self.t, h, w)
    out = v + self.w(y)
    return out.transpose(1, 2).reshape(bt, c, h, w)


class Bottleneck(nn.Module):
  """torchvision's v1.5 Bottleneck: 1x1, 3x3 (strided), 1x1 x4, projection shortcut."""

  def __init__(self, in_channels, channels, stride):
    super().__init__()
    out = channels * 4
    self.conv1, self.bn1 = nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels)
    self.conv3, self.bn3 = nn.Conv2d(channels, out, 1, bias=False), nn.BatchNorm2d(out)
    self.downsample = None
    if stride != 1 or in_channels != out:
      self.downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride, bias=False),
                                      nn.BatchNorm2d(out))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def trunk(stage_sizes, width, nonlocal_after, frames):
  """Stem + bottleneck stages (last stride 1) + global average pooling, as i2v_jax's ResNet."""
  layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1)]
  in_channels = width
  for stage, size in enumerate(stage_sizes):
    channels = width * 2 ** stage
    for block in range(size):
      stride = 2 if block == 0 and 0 < stage < len(stage_sizes) - 1 else 1
      layers.append(Bottleneck(in_channels, channels, stride))
      in_channels = channels * 4
      if block in nonlocal_after[stage]:
        layers.append(NonLocal(in_channels, frames))
  for m in layers:
    for conv in (c for c in m.modules() if isinstance(c, nn.Conv2d)):
      nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  return nn.Sequential(*layers), in_channels


class ReID(nn.Module):
  def __init__(self, num_classes, frames=None, tiny=False):
    super().__init__()
    stage_sizes, width = ((1, 1, 1, 1), 8) if tiny else ((3, 4, 6, 3), 64)
    nonlocal_after = ((), (), (), ())
    if frames:  # TKP's placement; --tiny as bench/train_step.py's (layer2 and layer3, block 0)
      nonlocal_after = ((), (0,), (0,), ()) if tiny else ((), (1, 3), (1, 3, 5), ())
    self.trunk, features = trunk(stage_sizes, width, nonlocal_after, frames)
    self.frames = frames
    self.bnneck = nn.BatchNorm1d(features)
    self.bnneck.bias.requires_grad_(False)
    self.classifier = nn.Linear(features, num_classes, bias=False)
    nn.init.normal_(self.classifier.weight, std=0.001)

  def forward(self, x):
    if self.frames:
      b, t = x.shape[:2]
      frame_features = self.trunk(x.flatten(0, 1)).reshape(b, t, -1)
      features = frame_features.mean(1)
    else:
      frame_features, features = None, self.trunk(x)
    return features, frame_features, self.classifier(self.bnneck(features))


def batch_hard_triplet(x, labels, margin=0.3):
  d = torch.cdist(x, x).clamp_min(1e-12)
  same = labels[:, None] == labels[None]
  eye = torch.eye(len(labels), dtype=torch.bool, device=x.device)
  pos = torch.where(same & ~eye, d, torch.full_like(d, -1e9)).max(1).values
  neg = torch.where(~same, d, torch.full_like(d, 1e9)).min(1).values
  return F.relu(pos - neg + margin).mean()


def cosine_distance(x):
  x = F.normalize(x, dim=1)
  return 1 - x @ x.T


def tcl(student, teacher, labels, tau=0.1):
  """(KL(sg(pi_T) || pi_S), KL(sg(pi_S) || pi_T)) over hardest pairs mined on the teacher."""
  dt, ds = cosine_distance(teacher), cosine_distance(student)
  same = labels[:, None] == labels[None]
  eye = torch.eye(len(labels), dtype=torch.bool, device=student.device)
  with torch.no_grad():
    p = torch.where(same & ~eye, dt, torch.full_like(dt, -1e9)).argmax(1)
    n = torch.where(~same, dt, torch.full_like(dt, 1e9)).argmin(1)
  rows = torch.arange(len(labels), device=student.device)
  log_pi = lambda d: F.log_softmax(-torch.stack([d[rows, p], d[rows, n]], 1) / tau, 1)
  lt, ls = log_pi(dt), log_pi(ds)
  kl = lambda target, pred: (target.exp() * (target - pred)).sum(1).mean()
  return kl(lt.detach(), ls), kl(ls.detach(), lt)


def logit_kl(target_logits, logits, tau=1.0):
  target = F.log_softmax(target_logits.detach() / tau, 1)
  return tau ** 2 * (target.exp() * (target - F.log_softmax(logits / tau, 1))).sum(1).mean()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--ids', type=int, default=2)
  parser.add_argument('--k', type=int, default=4)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--tiny', action='store_true', help="bench/train_step.py's tiny widths")
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--compile', action='store_true', help='torch.compile the step')
  args = parser.parse_args()
  torch.manual_seed(0)  # the same initial weights every run
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  # cuDNN picks the fastest convolution algorithm per shape, as re-ID training code commonly
  # asks: the PyTorch reference should be the usual fast setting, not a slow default.
  torch.backends.cudnn.benchmark = True
  num_classes, t, m = 625, 4, 4
  teacher = ReID(num_classes, frames=t, tiny=args.tiny).to(device)
  student = ReID(num_classes, tiny=args.tiny).to(device)
  params = list(teacher.parameters()) + list(student.parameters())
  opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
  b = args.ids * args.k
  gen = torch.Generator().manual_seed(0)
  clips = torch.randn(b, t, 3, args.height, args.width, generator=gen).to(device)
  labels = torch.randperm(num_classes, generator=gen)[:args.ids].repeat_interleave(args.k)
  labels = labels.to(device)

  def forward_backward():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16'):
      t_feat, t_frames, t_logits = teacher(clips)
      s_feat, _, s_logits = student(clips[:, :m].flatten(0, 1))
      labels_s = labels.repeat_interleave(m)
      t_logits_rep = t_logits.repeat_interleave(m, 0)
      forward, reverse = tcl(s_feat, t_frames[:, :m].flatten(0, 1), labels_s)
      loss = (F.cross_entropy(t_logits, labels) + F.cross_entropy(s_logits, labels_s)
              + batch_hard_triplet(t_feat, labels) + batch_hard_triplet(s_feat, labels_s)
              + forward + 0.5 * reverse
              + logit_kl(t_logits_rep, s_logits) + logit_kl(s_logits, t_logits_rep))
    loss.backward()
    return loss

  if args.compile:
    forward_backward = torch.compile(forward_backward)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = forward_backward()
    opt.step()
    return loss

  sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  t0 = time.perf_counter()
  loss = step()
  sync()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      loss = step()
    sync()
    times.append((time.perf_counter() - t0) / args.steps)
  median = statistics.median(times)
  name = torch.cuda.get_device_name() if device.type == 'cuda' else (
      f'cpu, {torch.get_num_threads()} threads')
  trainable = sum(p.numel() for p in params if p.requires_grad)
  print(json.dumps({'step_s': median, 'frames_per_s': b * t / median, 'loss': float(loss.detach()),
                    'first_step_s': first_s, 'params': trainable, 'dtype': args.dtype,
                    'mode': 'compile' if args.compile else 'eager',
                    'device': name, 'version': torch.__version__}))


if __name__ == '__main__':
  main()
