r"""``tfds build`` for the builders in ``data_prep.tfds_builders``.

    python -m data_prep.tfds_build synthetic --config small --data_dir ~/tensorflow_datasets
    python -m data_prep.tfds_build mars --manual_dir ~/datasets/MARS --data_dir ...

The same flags and code as ``tfds build`` (tensorflow_datasets' ``build``
command). Why not the ``tfds`` script itself: in tensorflow-datasets 4.9.10 it
imports its ``convert_format`` command at start-up, which needs apache-beam
(a large dependency the project does not otherwise need); with apache-beam
installed, ``tfds build synthetic --imports data_prep.tfds_builders ...`` is
equivalent. Our builders are registered on import, so no ``--imports`` is needed.
"""

from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils

from data_prep import tfds_builders  # noqa: F401  (importing it registers the builders)


def main(args: build.Args) -> None:
  args.execute()


if __name__ == '__main__':
  app.run(main, flags_parser=cli_utils.make_flags_parser(
      build.Args, description='Download and prepare a dataset (tfds build).'))
