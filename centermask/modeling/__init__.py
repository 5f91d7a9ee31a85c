"""Model components; importing this package registers them with detectron2."""
from . import backbone  # noqa: F401
from . import fcos  # noqa: F401
