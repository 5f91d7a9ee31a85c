"""The training step: detectron2's ``SimpleTrainer`` plus AMP and a non-finite-loss stop.

Differences from detectron2's ``SimpleTrainer`` / ``AMPTrainer``:

* every loss is cast to float32 before it is summed, scaled and logged, also under autocast;
* a non-finite loss on *any* rank stops training on *every* rank (no rank is left waiting in a
  collective) with a ``FloatingPointError`` naming the iteration and the loss terms, raised
  before the optimizer step, so no checkpoint ever holds weights updated by a NaN;
* AMP (``SOLVER.AMP.ENABLED``) runs fp16 autocast with a ``GradScaler`` on CUDA and bf16 autocast
  (no scaler needed) on CPU.
"""

import time
from typing import Dict, Optional

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

__all__ = ["CheckedTrainLoop", "check_losses_finite"]


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def check_losses_finite(loss_dict: Dict[str, torch.Tensor], iteration: int, hint: str = "") -> None:
    """Raise ``FloatingPointError`` on every rank if any rank has a non-finite loss term."""
    bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    if comm.get_world_size() > 1:
        device = next(iter(loss_dict.values())).device if loss_dict else torch.device("cpu")
        flag = torch.tensor([1.0 if bad else 0.0], device=device)
        dist.all_reduce(flag)
        if flag.item() == 0:
            return
        per_rank = comm.all_gather(bad)
        bad = {f"{k} (rank {r})": v for r, d in enumerate(per_rank) for k, v in d.items()}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise FloatingPointError(
            f"Non-finite loss at iteration {iteration}: {terms}. Training stopped before the "
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
    ):
        super().__init__(model, data_loader, optimizer)
        self.amp = amp
        self.device_type = _model_device(model).type
        self.amp_dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        if amp and self.device_type == "cuda" and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler("cuda")
        self.grad_scaler = grad_scaler if amp else None
        self.nonfinite_hint = nonfinite_hint

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
        check_losses_finite(loss_dict, self.iter, self.nonfinite_hint)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self) -> dict:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
