"""Norm-layer helpers on top of detectron2's ``get_norm`` with errors that name the config key."""

from typing import Callable, Iterable, Union

from detectron2.layers import get_norm
from torch import nn

__all__ = ["GN_GROUPS", "check_norm", "make_norm"]

# detectron2's get_norm("GN", C) builds nn.GroupNorm(32, C).
GN_GROUPS = 32

NormSpec = Union[str, Callable[[int], nn.Module]]


def check_norm(norm: NormSpec, channels: Iterable[int], setting: str = "norm") -> None:
    """Fail early, with a message naming ``setting``, if ``norm`` cannot normalise ``channels``.

    Checks that a string norm is known to ``get_norm`` and that every channel count is divisible
    by the 32 groups of "GN".
    """
    if not isinstance(norm, str) or norm == "":
        return
    try:
        get_norm(norm, GN_GROUPS)
    except KeyError:
        raise ValueError(
            f"{setting}={norm!r} is not a norm known to detectron2's get_norm "
            "(e.g. 'FrozenBN', 'BN', 'SyncBN', 'GN')"
        ) from None
    if norm == "GN":
        bad = sorted({c for c in channels if c % GN_GROUPS})
        if bad:
            raise ValueError(
                f"{setting}='GN' uses GroupNorm with {GN_GROUPS} groups, but this network has "
                f"norm layers with {', '.join(map(str, bad))} channels, which is not divisible "
                f"by {GN_GROUPS}. Use 'FrozenBN', 'BN' or 'SyncBN' for this architecture."
            )


def make_norm(norm: NormSpec, channels: int) -> nn.Module:
    """``get_norm(norm, channels)``, or ``nn.Identity`` (no parameters) when ``norm`` is empty."""
    layer = get_norm(norm, channels)
    return nn.Identity() if layer is None else layer
