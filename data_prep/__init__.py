"""Raw dataset folders -> sharded TFRecords + metadata (``python -m data_prep.build``)."""
