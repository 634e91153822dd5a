"""quickdraw: Google's QuickDraw drawings to an on-device doodle classifier."""

from quickdraw.errors import QuickDrawError

__version__ = "0.1.0"

__all__ = ["QuickDrawError", "__version__"]
