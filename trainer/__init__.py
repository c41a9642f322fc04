"""The LoRA trainer: ``python -m trainer --spec ...`` trains one job on a GPU of the cluster.

It reads a :class:`shared.training_events.TrainerSpec`, downloads the dataset through its signed
URL, fine-tunes a LoRA adapter of the base model with transformers + peft in its own training
loop, prints one event a line on stdout (``shared.training_events``), and uploads checkpoints and
the final adapter through the signed upload URLs of the spec. It never runs inside a cloud
function, and nothing under ``shared/`` imports it.

Exit codes (also in ``python -m trainer --help``):

* ``0`` completed: the final adapter is saved (and uploaded where upload URLs were given);
* ``1`` failed: a ``failed`` event says why (``code`` and ``message``);
* ``2`` the spec or the command line is unusable (unreadable spec, refused hyperparameters):
  nothing was trained;
* ``3`` cancelled: SIGTERM (or SIGINT) stopped the run at a step boundary, after the checkpoint
  was saved and uploaded.
"""

from typing import Final

EXIT_COMPLETED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_CANCELLED: Final = 3
