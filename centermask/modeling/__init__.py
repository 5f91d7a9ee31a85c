"""Model components; importing this package registers them with detectron2."""

from . import backbone  # noqa: F401
from . import centermask_pr  # noqa: F401
from . import condinst  # noqa: F401
from . import fcos  # noqa: F401
from . import roi_heads  # noqa: F401
from .test_time_augmentation import CenterMaskWithTTA, check_tta_support  # noqa: F401
