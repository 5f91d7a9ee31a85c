"""The training step: detectron2's ``SimpleTrainer`` plus AMP and a non-finite-loss stop.

Differences from detectron2's ``SimpleTrainer`` / ``AMPTrainer``:

* every loss is cast to float32 before it is summed, scaled and logged, also under autocast;
* the loss values and one combined finiteness flag (all-reduced over the ranks) reach the host
  in a single copy per step, after the backward pass has been queued: one wait for the device
  per step, not one per loss term;
* without AMP, a non-finite loss on *any* rank stops training on *every* rank (no rank is left
  waiting in a collective) with a ``FloatingPointError`` naming the iteration and the loss
  terms, raised before the optimizer step, so no checkpoint ever holds weights updated by a NaN;
* with AMP (``SOLVER.AMP.ENABLED``: fp16 autocast with a ``GradScaler`` on CUDA, bf16 autocast
  without one on CPU) a non-finite loss skips the step on every rank, as the ``GradScaler``
  does for overflowing gradients (and lowers its scale); training stops, naming the loss terms,
  only when ``max_nonfinite_steps`` steps in a row were skipped.
"""

import logging
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

__all__ = ["CheckedTrainLoop", "check_losses_finite"]

logger = logging.getLogger(__name__)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _losses_on_host(loss_dict: Dict[str, torch.Tensor]) -> Tuple[List[float], bool]:
    """The loss values and whether any rank has a non-finite one, in one device-to-host copy
    (the flag is all-reduced on the device first when there are several ranks)."""
    values = torch.stack([v.detach().reshape(()).float() for v in loss_dict.values()])
    if comm.get_world_size() > 1:
        flag = (~torch.isfinite(values)).any().float().reshape(1)
        dist.all_reduce(flag)
        host = torch.cat([values, flag]).cpu().tolist()
        return host[:-1], host[-1] > 0
    host = values.cpu().tolist()
    return host, not all(map(_finite, host))


def _finite(value: float) -> bool:
    return value - value == 0  # False for inf and nan


def _nonfinite_terms(keys: List[str], values: List[float]) -> str:
    """ "name=value" of this rank's non-finite terms, or of every rank's (naming the rank) when
    there are several ranks."""
    bad = {k: v for k, v in zip(keys, values) if not _finite(v)}
    if comm.get_world_size() > 1:
        per_rank = comm.all_gather(bad)
        bad = {f"{k} (rank {r})": v for r, d in enumerate(per_rank) for k, v in d.items()}
    return ", ".join(f"{k}={v}" for k, v in bad.items())


def check_losses_finite(loss_dict: Dict[str, torch.Tensor], iteration: int, hint: str = "") -> None:
    """Raise ``FloatingPointError`` on every rank if any rank has a non-finite loss term."""
    if not loss_dict:
        return
    values, any_bad = _losses_on_host(loss_dict)
    if any_bad:
        raise FloatingPointError(
            f"Non-finite loss at iteration {iteration}: "
            f"{_nonfinite_terms(list(loss_dict), values)}. Training stopped before the "
            f"optimizer step, so no weights were updated with it. {hint}"
        )


class CheckedTrainLoop(SimpleTrainer):
    """``SimpleTrainer`` with float32 losses, the non-finite-loss stop and optional AMP.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``.
        amp: run the forward pass under autocast.
        grad_scaler: for CUDA AMP; created when None.
        nonfinite_hint: appended to the non-finite-loss message (e.g. where the last good
            checkpoint is and which config keys help).
        max_nonfinite_steps: with AMP, the number of consecutive steps with a non-finite loss
            (each skipped) after which training stops.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        amp: bool = False,
        grad_scaler: Optional["torch.amp.GradScaler"] = None,
        nonfinite_hint: str = "",
        max_nonfinite_steps: int = 20,
    ):
        super().__init__(model, data_loader, optimizer)
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.amp = amp
        self.device_type = _model_device(model).type
        self.amp_dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        if amp and self.device_type == "cuda" and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler("cuda")
        self.grad_scaler = grad_scaler if amp else None
        self.nonfinite_hint = nonfinite_hint
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0  # consecutive steps skipped for a non-finite loss (AMP)

    def run_step(self) -> None:
        assert self.model.training, "[CheckedTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        # The step's one wait for the device, with the backward pass already queued.
        values, any_bad = _losses_on_host(loss_dict)
        if any_bad:
            self._skip_or_stop(list(loss_dict), values)
            return
        self.nonfinite_steps = 0
        self._write_host_metrics(dict(zip(loss_dict, values)), data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    @staticmethod
    def _write_host_metrics(metrics: Dict[str, float], data_time: float) -> None:
        """detectron2's metrics (``data_time``: the slowest rank's; ``total_loss`` and each
        term: the mean over the ranks) from values already on the host, so that logging them
        does not wait for the device again."""
        per_rank = comm.gather({**metrics, "data_time": data_time})
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", max(m.pop("data_time") for m in per_rank))
        means = {k: sum(m[k] for m in per_rank) / len(per_rank) for k in per_rank[0]}
        storage.put_scalar("total_loss", sum(means.values()))
        if len(means) > 1:
            storage.put_scalars(**means)

    def _skip_or_stop(self, keys: List[str], values: List[float]) -> None:
        """A non-finite loss: stop without AMP or once it has persisted; else skip the step."""
        terms = _nonfinite_terms(keys, values)
        self.nonfinite_steps += 1
        if not self.amp or self.nonfinite_steps >= self.max_nonfinite_steps:
            persisted = (
                f" (non-finite in {self.nonfinite_steps} consecutive AMP steps, each skipped)"
                if self.amp
                else ""
            )
            raise FloatingPointError(
                f"Non-finite loss at iteration {self.iter}: {terms}{persisted}. Training stopped "
                f"before the optimizer step, so no weights were updated with it. "
                f"{self.nonfinite_hint}"
            )
        logger.warning(
            f"Non-finite loss at iteration {self.iter} under AMP: {terms}; step skipped "
            f"({self.nonfinite_steps} in a row, training stops at {self.max_nonfinite_steps})."
        )
        if self.grad_scaler is not None:
            # What the scaler does when it finds non-finite gradients: no step, a lower scale.
            scaler = self.grad_scaler
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())

    def state_dict(self) -> dict:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
