"""Moved to helpers.beyond.steps (notebook 05's package). `helpers.steps` stays importable and IS that module
(the same object, so attributes set on either name are seen by both)."""
import sys

from .beyond import steps as _moved

sys.modules[__name__] = _moved
