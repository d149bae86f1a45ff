from ._api import check as check, track as track
from .report import Group as Group, NativeFrame as NativeFrame, PythonFrame as PythonFrame
from .report import Holder as Holder, NativeLeak as NativeLeak, Report as Report
from .report import Unexplained as Unexplained

__version__: str
__all__: list[str]
