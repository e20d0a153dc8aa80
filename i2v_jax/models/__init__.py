"""Networks of SPEC §2: ResNet trunk, non-local block, teacher, student, head."""

from i2v_jax.models.reid import BNNeckHead, StudentNet, TeacherNet, build_models
from i2v_jax.models.resnet import ResNet

__all__ = ['BNNeckHead', 'ResNet', 'StudentNet', 'TeacherNet', 'build_models']
