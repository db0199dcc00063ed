"""Moved to helpers.beyond.sft_select (notebook 05's package). `helpers.sft_select` stays importable and IS that module
(the same object, so attributes set on either name are seen by both)."""
import sys

from .beyond import sft_select as _moved

sys.modules[__name__] = _moved
