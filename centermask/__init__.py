"""CenterMask for Detectron2.

``import centermask`` registers every component with detectron2's registries: the VoVNet,
MobileNetV2 and FCOS-FPN backbones, the ``FCOS`` proposal generator, ``CenterROIHeads``, the
``SpatialAttentionMaskHead`` mask head and the ``MaskIoUHead``, the ``CondInst`` and
``CenterMaskPR`` meta-architectures; and the ``centermask://<config
name>`` scheme for published checkpoints (:mod:`centermask.model_zoo`).
"""

from . import model_zoo  # noqa: F401  (registers centermask:// with detectron2's PathManager)
from . import modeling  # noqa: F401  (registers the components)
from .acceleration import optimize_for_inference  # noqa: F401
from .config import add_centermask_config, get_cfg  # noqa: F401

__version__ = "0.1.0"
