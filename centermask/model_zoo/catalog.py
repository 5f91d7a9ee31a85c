"""The published checkpoints: config name, download URL and the authors' COCO val2017 numbers.

Sources: the original CenterMask (centermask2) README's model-zoo tables, and AdelaiDet's CondInst
README for the CondInst rows. AP numbers are as published; no checksums were published (the first
download records one, see :mod:`.download`). For the Panoptic-CenterMask rows the original table's
header says "mask AP, box AP, PQ"; the values are kept in that order, as published.
"""

from dataclasses import dataclass
from typing import Dict, Optional

__all__ = ["PublishedModel", "PUBLISHED_MODELS"]


@dataclass(frozen=True)
class PublishedModel:
    """A checkpoint trained on COCO 2017 train by the original authors."""

    url: str
    mask_ap: float
    box_ap: float
    pq: Optional[float] = None  # Panoptic-CenterMask only


_DROPBOX = "https://dl.dropbox.com/s/"
_CONDINST = "https://huggingface.co/tianzhi/AdelaiDet-CondInst/resolve/main/"

# "<configs sub-folder>/<config file stem>" -> checkpoint
PUBLISHED_MODELS: Dict[str, PublishedModel] = {
    "centermask/centermask_V_39_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "tczecsdxt10uai5/centermask2-V-39-eSE-FPN-ms-3x.pth", 39.7, 44.2
    ),
    "centermask/centermask_V_39_eSE_dcn_FPN_ms_3x": PublishedModel(
        _DROPBOX + "zmps03vghzirk7v/centermask-V-39-eSE-dcn-FPN-ms-3x.pth", 40.3, 45.1
    ),
    "centermask/centermask_V_57_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "lw8nxajv1tim8gr/centermask2-V-57-eSE-FPN-ms-3x.pth", 40.5, 45.1
    ),
    "centermask/centermask_V_57_eSE_dcn_FPN_ms_3x": PublishedModel(
        _DROPBOX + "1f64azqyd2ot6qq/centermask-V-57-eSE-dcn-FPN-ms-3x.pth", 40.9, 45.5
    ),
    "centermask/centermask_V_99_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "c6n79x83xkdowqc/centermask2-V-99-eSE-FPN-ms-3x.pth", 41.4, 46.0
    ),
    "centermask/centermask_V_99_eSE_dcn_FPN_ms_3x": PublishedModel(
        _DROPBOX + "atuph90nzm7s8x8/centermask-V-99-eSE-dcn-FPN-ms-3x.pth", 42.0, 46.9
    ),
    "centermask/centermask_lite_V_19_eSE_FPN_ms_4x": PublishedModel(
        _DROPBOX + "dret2ap7djty7mp/centermask2-lite-V-19-eSE-FPN-ms-4x.pth", 32.8, 35.9
    ),
    "centermask/centermask_lite_V_39_eSE_FPN_ms_4x": PublishedModel(
        _DROPBOX + "uwc0ypa1jvco2bi/centermask2-lite-V-39-eSE-FPN-ms-4x.pth", 36.7, 40.9
    ),
    "centermask/centermask_lite_V_19_slim_eSE_FPN_ms_4x": PublishedModel(
        _DROPBOX + "o2n1ifl0zkbv16x/centermask-lite-V-19-eSE-slim-FPN-ms-4x.pth", 29.8, 32.5
    ),
    "centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x": PublishedModel(
        _DROPBOX + "vsvhwtqm6ko1c7m/centermask-lite-V-19-eSE-slim-dw-FPN-ms-4x.pth", 27.1, 29.5
    ),
    "centermask/centermask_lite_Mv2_FPN_ms_4x": PublishedModel(
        _DROPBOX + "8omou546f0n78nj/centermask_lite_Mv2_ms_4x.pth", 27.2, 29.8
    ),
    "centermask/panoptic_centermask_R_50_FPN_ms_3x": PublishedModel(
        _DROPBOX + "vxe51cdeprao94j/panoptic_centermask_R_50_ms_3x.pth", 41.4, 37.3, 42.0
    ),
    "centermask/panoptic_centermask_V_39_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "49ig16ailra1f4t/panoptic_centermask_V_39_eSE_ms_3x.pth", 43.4, 39.0, 43.7
    ),
    "centermask/panoptic_centermask_R_101_FPN_ms_3x": PublishedModel(
        _DROPBOX + "y5stg3qx72gff5o/panoptic_centermask_R_101_ms_3x.pth", 43.5, 39.0, 43.6
    ),
    "centermask/panoptic_centermask_V_57_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "kqukww4y7tbgbrh/panoptic_centermask_V_57_ms_3x.pth", 43.9, 39.6, 44.5
    ),
    "centermask/panoptic_centermask_V_99_eSE_FPN_ms_3x": PublishedModel(
        _DROPBOX + "pr6a3inpasn7qlz/panoptic_centermask_V_99_ms_3x.pth", 45.1, 40.6, 45.4
    ),
    "condinst/MS_R_50_1x": PublishedModel(_CONDINST + "CondInst_MS_R_50_1x.pth", 35.7, 39.7),
    "condinst/MS_R_50_3x": PublishedModel(_CONDINST + "CondInst_MS_R_50_3x.pth", 37.5, 41.9),
    "condinst/MS_R_101_3x": PublishedModel(_CONDINST + "CondInst_MS_R_101_3x.pth", 38.6, 43.3),
    "condinst/MS_R_50_3x_sem": PublishedModel(
        _CONDINST + "CondInst_MS_R_50_3x_sem.pth", 38.2, 42.6
    ),
    "condinst/MS_R_101_3x_sem": PublishedModel(
        _CONDINST + "CondInst_MS_R_101_3x_sem.pth", 39.8, 44.6
    ),
    "condinst/MS_R_50_BiFPN_3x": PublishedModel(
        _CONDINST + "CondInst_MS_R_50_BiFPN_3x.pth", 38.9, 44.3
    ),
}
