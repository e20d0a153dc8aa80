"""Raw dataset folders -> sharded TFRecords + metadata (``python -m data_prep.build``)."""

import os

# A build decodes every frame with TensorFlow's JPEG decoder, which logs each frame
# it refuses at ERROR level before the build's own one-line refusal; a user's
# explicit setting wins.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
