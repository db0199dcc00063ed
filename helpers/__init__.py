"""Shared code for the logprob-reward reasoning curriculum.

Import order matters on GPU: call `helpers.runtime.pick_backend()` before anything imports
transformers or trl, so that Unsloth can patch them. This package imports neither at import time.
"""
__version__ = "0.1.0"
