"""Training hooks: checkpointing and evaluation that stop after a failure, and a loss curve."""

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.engine import HookBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import EventWriter

from centermask.utils.file_io import named_write_error

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "LossCurveHook",
    "NamedWriteErrors",
    "read_metrics",
    "plot_loss_curve",
]

logger = logging.getLogger(__name__)


class CheckpointHook(hooks.PeriodicCheckpointer):
    """detectron2's ``PeriodicCheckpointer`` hook that writes nothing once training has failed,
    and writes ``model_final`` at ``trainer.max_iter`` also when that moves (a time budget).

    detectron2 (upstream) saves ``model_final`` in ``after_train`` when the failing iteration was
    the last one; after an exception (a non-finite loss, say) that would record a state that did
    not finish its step. The trainer sets ``trainer.failed`` when ``run_step`` raises.
    """

    def after_step(self):
        # The end of training can move (a time budget decides it as training goes).
        self.max_iter = self.trainer.max_iter
        super().after_step()

    def after_train(self):
        if getattr(self.trainer, "failed", False):
            return
        super().after_train()


class NamedWriteErrors(EventWriter):
    """An event writer (detectron2's ``JSONWriter``, ``TensorboardXWriter``) whose write errors
    (a full disk, a read-only folder) name the file or folder it writes and the errno."""

    def __init__(self, writer: EventWriter, default_path: str):
        self.writer = writer
        handle = getattr(writer, "_file_handle", None)
        self.path = getattr(handle, "name", None) or default_path

    def write(self):
        try:
            self.writer.write()
        except OSError as e:
            raise named_write_error(
                e, self.path, "Free space or fix the folder, then --resume."
            ) from e

    def close(self):
        try:
            self.writer.close()
        except OSError as e:
            raise named_write_error(e, self.path) from e


class EvalHook(hooks.EvalHook):
    """detectron2's ``EvalHook`` that skips its end-of-training evaluation after a failure.

    detectron2 evaluates in ``after_train`` whenever the last iteration was reached, also when
    that iteration raised (e.g. a non-finite loss), which would evaluate a half-done step and can
    mask the original error with one from the evaluation.
    """

    def after_train(self):
        if getattr(self.trainer, "failed", False):
            return
        super().after_train()


def read_metrics(metrics_json: str) -> List[Dict]:
    """The records of detectron2's ``metrics.json`` (one json object per line); bad lines skipped."""
    records = []
    with open(metrics_json) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a killed run
    return records


def plot_loss_curve(
    metrics_json: str,
    output_png: str,
    keys: Optional[Sequence[str]] = None,
    title: str = "training loss",
) -> Optional[str]:
    """Plot the loss terms of ``metrics.json`` against the iteration (log-scale y) into a PNG.

    ``keys`` defaults to ``total_loss`` and every ``loss_*`` term. Returns the PNG path, or None
    when the file holds no loss values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_json) if "iteration" in r and "total_loss" in r]
    if not records:
        return None
    if keys is None:
        names = {k for r in records for k in r if k.startswith("loss_")}
        keys = ["total_loss"] + sorted(names)
    fig, ax = plt.subplots(figsize=(8, 5))
    for key in keys:
        points = [(r["iteration"], r[key]) for r in records if key in r and r[key] > 0]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key, linewidth=2.0 if key == "total_loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output_png)), exist_ok=True)
    fig.savefig(output_png, dpi=100)
    plt.close(fig)
    return output_png


class LossCurveHook(HookBase):
    """After training, plot ``<output_dir>/metrics.json`` into ``<output_dir>/loss_curve.png``.

    Register it after detectron2's ``PeriodicWriter`` so that the last metrics are flushed first.
    """

    def __init__(self, output_dir: str, filename: str = "loss_curve.png"):
        self._output_dir = output_dir
        self._filename = filename

    def after_train(self):
        if not comm.is_main_process():
            return
        metrics = os.path.join(self._output_dir, "metrics.json")
        if not os.path.isfile(metrics):
            return
        try:
            path = plot_loss_curve(metrics, os.path.join(self._output_dir, self._filename))
        except Exception as e:  # a plot must never fail a finished training
            logger.warning(f"Could not plot the loss curve from {metrics}: {e}")
            return
        if path:
            logger.info(f"Loss curve written to {path}")
