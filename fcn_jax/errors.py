"""The project's exception family for mistakes a user can fix.

A command prints a :class:`UserError` as one line, ``error: ...``, and exits
with status 2 (:mod:`fcn_jax.cli`); any other exception is a bug, in this
project or in a library, and keeps its traceback. The message names the file,
flag or config field at fault and the fix.

``UserError`` subclasses :class:`ValueError` so that code written against the
older convention (``except ValueError``) keeps catching it; the command line
no longer treats every ``ValueError`` as the user's, only this family.
"""

from __future__ import annotations


class UserError(ValueError):
  """Bad input: a config value, a missing or damaged file or dataset, a
  checkpoint of another model, an output that cannot be written."""


class DivergedError(UserError, FloatingPointError):
  """Training produced non-finite values (loss, gradients or parameters);
  nothing non-finite was saved. The fix is a smaller learning rate, another
  initialisation or a checkpoint from before the divergence."""
