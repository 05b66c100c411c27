"""The inference commands' flags (``predict``, ``export``): absl flags, as
``main``, ``evaluate`` and ``dry_run`` use, parsed with the project's
command-line style (:mod:`fcn_jax.cli`).

Each parse defines its flags on a fresh ``absl.flags.FlagValues`` (not the
process-wide ``FLAGS``): these commands are also called as functions
(``predict.main([...])``), in one process beside ``main`` and ``evaluate``,
whose flags share names (``--checkpoint``, ``--step``, ``--output``), and a
value must not carry over from one call to the next. Old hyphenated
spellings are accepted (:func:`fcn_jax.cli.normalise_argv`), ``--help``
prints the flags and exits 0, and a mistake is one line, ``error: ...``,
exit status 2.

Also here: the flags that configure a
:class:`~fcn_jax.inference.predictor.Predictor`
(:func:`define_predictor_flags`, :func:`check_predictor_flags`,
:func:`make_predictor`).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from absl import flags

from fcn_jax import cli
from fcn_jax import errors
from fcn_jax import xla_flags
from fcn_jax.data import buckets as buckets_lib
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax.inference import tta
from fcn_jax.inference.inputs import InputError


def parse(argv: Sequence[str], define: Callable[[flags.FlagValues], None], *,
          prog: str, doc: str,
          aliases: dict[str, str] | None = None) -> argparse.Namespace:
  """Parses ``argv`` (without the program name) against the flags that
  ``define`` adds to a fresh ``FlagValues`` (and ``--xla_cpu_flags``), with
  :func:`fcn_jax.cli.parse_command`.

  Returns:
    The flag values as attributes.

  Raises:
    SystemExit: 0 after ``--help``; 2 after one ``error: ...`` line for an
      unknown flag, a bad or missing value, or a positional argument.
  """
  values = flags.FlagValues()
  define(values)
  flags.DEFINE_enum(
      "xla_cpu_flags", None, list(xla_flags.CHOICES),
      "tuned: add fcn_jax.xla_flags.TUNED_CPU_FLAGS to XLA_FLAGS before JAX "
      "starts (faster on CPUs; no effect on GPUs/TPUs); default: XLA's own. "
      f"Unset: ${xla_flags.ENV_VAR}, else tuned.", flag_values=values)
  cli.parse_command(values, argv, prog=prog, doc=doc, aliases=aliases)
  return argparse.Namespace(**values.flag_values_dict())


def converted(args: argparse.Namespace, name: str,
              convert: Callable[[Any], Any]) -> None:
  """Replaces ``args.<name>`` by ``convert`` of it; a user mistake ends the
  parse with one line and exit status 2 (as a bad flag does)."""
  try:
    setattr(args, name, convert(getattr(args, name)))
  except errors.UserError as e:
    cli.fail(str(e))


def step_rule(value: str) -> str | int:
  """``--step``: ``best``, ``latest`` or a step number
  (:func:`fcn_jax.checkpointing.parse_step`, the one rule).

  Raises:
    errors.UserError: Anything else, with the accepted values.
  """
  from fcn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    return checkpointing.parse_step(value)
  except ValueError:
    raise errors.UserError(
        f"--step {value!r}: give best (the checkpoint with the best mean IU; "
        "the latest if none was evaluated), latest, or a step number such as "
        "4000") from None


def define_predictor_flags(values: flags.FlagValues) -> None:
  """The flags that configure a
  :class:`fcn_jax.inference.predictor.Predictor`."""
  flags.DEFINE_enum(
      "mode", "fast", list(predictor_lib.MODES),
      "fast: pad to shape buckets and batch; exact: the native-size logits of "
      "the reference deploy net, at a few buckets chosen from the input sizes "
      "(--buckets auto), batched (the net masks the padding; native size one "
      "shape at a time with --flip, --scales or --shift_stitch); slide: "
      "overlapping --window tiles, batched (--batch_size windows per pass), "
      "logits averaged where they overlap, for images too large for memory. "
      "An image too large for fast/exact is reported and skipped with the "
      "slide command to use (never switched silently: slide's labels differ "
      "near window borders).", flag_values=values)
  flags.DEFINE_integer(
      "window", None, f"slide mode: side of the square windows in pixels "
      f"(default {predictor_lib.DEFAULT_WINDOW}; images smaller than it are "
      "padded to it).", flag_values=values)
  flags.DEFINE_integer(
      "stride", None, "slide mode: distance between windows in pixels, at "
      f"most --window (default {predictor_lib.DEFAULT_STRIDE_FRACTION:g} of "
      "the window: 384 for 512).", flag_values=values)
  flags.DEFINE_string(
      "buckets", buckets_lib.AUTO,
      "fast and exact mode: 'auto' (default: exact mode picks at most "
      "--max_buckets sizes from the inputs' sizes, as training does, so a "
      "folder of mixed sizes compiles at most that many times; fast mode "
      f"rounds each side up to a multiple of "
      f"{predictor_lib.FALLBACK_MULTIPLE}), a multiple to round sizes up to, "
      "e.g. 32, or HxW sizes such as 384x512,512x384.", flag_values=values)
  flags.DEFINE_integer(
      "max_buckets", buckets_lib.DEFAULT_MAX_BUCKETS,
      "--buckets auto in exact mode: at most this many buckets.",
      lower_bound=1, flag_values=values)
  flags.DEFINE_integer(
      "batch_size", 4, "images per forward pass (slide mode: windows per "
      "pass, one image at a time).", lower_bound=1, flag_values=values)
  flags.DEFINE_boolean(
      "flip", False, "test-time augmentation: average with the horizontally "
      "flipped image.", flag_values=values)
  flags.DEFINE_string(
      "scales", "1.0", "test-time augmentation: comma-separated scales whose "
      "logits are averaged, e.g. 0.75,1.0,1.25.", flag_values=values)
  flags.DEFINE_integer(
      "shift_stitch", 1, "replace the final upsampler by shift-and-stitch "
      "with FxF shifted passes (F must divide the net's stride 32/16/8; 1: "
      "off).", lower_bound=1, flag_values=values)


def convert_predictor_flags(args: argparse.Namespace) -> None:
  """The values of :func:`define_predictor_flags` that need parsing."""
  converted(args, "buckets", predictor_lib.parse_buckets)
  converted(args, "scales", lambda s: tta.from_flags(scales=s).scales)


def check_predictor_flags(args: argparse.Namespace) -> None:
  """Checks :func:`define_predictor_flags`' flags together and fills in
  slide mode's window and stride, before anything is loaded.

  Raises:
    InputError: ``--window``/``--stride`` without ``--mode slide``, or values
      that cannot tile an image.
  """
  if args.mode != "slide":
    given = [f for f, v in (("--window", args.window),
                            ("--stride", args.stride)) if v is not None]
    if given:
      raise InputError(f"{' and '.join(given)} apply to --mode slide only; "
                       f"add --mode slide or drop {' and '.join(given)}")
    return
  window = predictor_lib.DEFAULT_WINDOW if args.window is None else args.window
  try:
    args.window, args.stride = predictor_lib.slide_settings(window, args.stride)
  except errors.UserError as e:
    given = f"--window {window}" + (
        "" if args.stride is None else f" --stride {args.stride}")
    raise InputError(f"{given}: {e}") from None


def make_predictor(args: argparse.Namespace, model, variables,
                   preprocessing) -> predictor_lib.Predictor:
  """A Predictor configured by :func:`define_predictor_flags`' flags
  (checked by :func:`check_predictor_flags`)."""
  slide = ({"window": args.window, "stride": args.stride}
           if args.mode == "slide" else {})
  return predictor_lib.Predictor(
      model, variables, preprocessing, mode=args.mode, buckets=args.buckets,
      max_buckets=args.max_buckets, batch_size=args.batch_size,
      flip=args.flip, scales=args.scales, shift_stitch=args.shift_stitch,
      **slide)
