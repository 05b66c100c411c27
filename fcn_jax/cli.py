"""What every command shares (scenic's ``app.py``): one start-up, one error
path, and the absl/ml_collections config-flag plumbing.

* :func:`start`: the start-up of every command that runs a model (``main``,
  ``evaluate``, ``predict``, ``export``): the XLA:CPU flags of
  :mod:`fcn_jax.xla_flags` before JAX starts, quiet library logs, JAX's
  persistent compilation cache (:mod:`fcn_jax.compilation_cache`), and
  multi-process JAX where the environment asks for it.
* :func:`run_reporting_errors` / :func:`exit_code`: bad input (a config
  value, a missing file or dataset, a checkpoint of another model: an
  :class:`fcn_jax.errors.UserError`, or an ``OSError``) reported as one line
  naming the problem and the fix, exit status 2, instead of a traceback
  (which ``--verbosity=1`` shows). Any other exception is a bug and keeps
  its traceback.
* :func:`run_main`: every command's ``__main__`` block; a Ctrl-C that no
  command handles (at start-up: config resolution, dataset checks,
  compilation) is one line and exit status 130.
* One command-line style: every flag is spelled with underscores
  (``--data_dir``, ``--batch_size``, ``--no_progress``), as absl spells
  them; the older hyphenated spellings (``--data-dir``, ``--batch-size``)
  are accepted as hidden aliases (:func:`normalise_argv`, used by
  :func:`parse_flags` and :func:`parse_command`). ``--help`` exits 0.
* One flags library, absl: ``main``, ``evaluate`` and ``dry_run`` parse the
  global flags with ml_collections' ``--config`` (:func:`parse_flags`);
  ``convert``, ``prepare_data`` and ``plot_metrics``, whose ``main(argv)`` is
  also called in-process, parse their own ``FlagValues``
  (:func:`parse_command`), as do ``predict`` and ``export``.
* One overwrite rule (:func:`check_overwrite`): an output you name outside a
  training workdir is never replaced without ``--overwrite``; a workdir's own
  reports (``eval_results.json``, ``metrics.png``) are updated in place.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import traceback
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

from fcn_jax import compilation_cache
from fcn_jax import errors
from fcn_jax import xla_flags

# The absl commands' --xla_cpu_flags (parse_command's commands read the
# variable).
XLA_CPU_FLAGS = flags.DEFINE_enum(
    "xla_cpu_flags", None, list(xla_flags.CHOICES),
    "tuned: add fcn_jax.xla_flags.TUNED_CPU_FLAGS to XLA_FLAGS before JAX "
    "starts (XLA:CPU runs convolutions on its Eigen kernels instead of "
    "YNNPACK fusions: faster on CPUs; no effect on GPUs/TPUs); default: "
    "XLA's own. Unset: $" + xla_flags.ENV_VAR + ", else tuned.")

# Errors that mean bad input (a config value, a missing file or dataset, a
# checkpoint of another model, a diverged run) or a file system that refuses
# (a full disk, no permission): one line, exit status 2. Any other exception
# is a bug, in fcn_jax or a library, and keeps its traceback.
USER_ERRORS = (errors.UserError, OSError)
USAGE_EXIT_CODE = 2
# What a shell reports for a process ended by Ctrl-C (as
# fcn_jax.training.interrupts.EXIT_STATUS).
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT


def fail(message: str) -> None:
  """Prints ``error: message`` on stderr and exits with status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT_CODE)


HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "-h")


def normalise_argv(argv: Sequence[str], known: Callable[[str], bool],
                   aliases: dict[str, str] | None = None) -> list[str]:
  """Rewrites old flag spellings to the one spelling of each concept.

  ``--some-flag[=v]`` becomes ``--some_flag[=v]`` when ``known`` accepts the
  underscore form, and any name in ``aliases`` (e.g. ``--batch`` ->
  ``--batch_size``) becomes its target; ``--config.*`` overrides and
  positional arguments pass unchanged.
  """
  aliases = aliases or {}
  out = []
  for arg in argv:
    if arg.startswith("--") and not arg.startswith("--config."):
      name, sep, value = arg.partition("=")
      if name in aliases:
        name = aliases[name]
      elif "-" in name[2:] and known("--" + name[2:].replace("-", "_")):
        name = "--" + name[2:].replace("-", "_")
      arg = name + sep + value
    out.append(arg)
  return out


def _flags_help(flag_values: flags.FlagValues) -> str:
  """Each flag in its one spelling (``--overwrite``, not absl's
  ``--[no]overwrite``), with its values and default."""
  lines = []
  for flag in sorted({f for fs in flag_values.flags_by_module_dict().values()
                      for f in fs}, key=lambda f: f.name):
    # absl's enum help starts with the values: <a|b|c>: ...
    name = f"--{flag.name}" + ("" if flag.boolean
                               else f"={flag.name.upper()}")
    default = ("" if flag.default in (None, False) or flag.boolean
               else f" (default: {flag.default})")
    lines.append(textwrap.fill(
        f"{name}: {flag.help}{default}", width=80, initial_indent="  ",
        subsequent_indent="      ", break_long_words=False,
        break_on_hyphens=False))
  return "\n".join(lines)


def parse_command(flag_values: flags.FlagValues, argv: Sequence[str], *,
                  prog: str, doc: str, epilog: str = "",
                  positional: str | None = None,
                  aliases: dict[str, str] | None = None) -> list[str]:
  """absl flag parsing for a command whose ``main(argv)`` is also called
  in-process (tests, notebooks): its flags live in its own ``flag_values``
  (so two commands' ``--output`` never clash in one process), are reset to
  their defaults on each call, may follow positional arguments, and keep
  the project's command-line style: old hyphenated spellings and
  ``aliases`` accepted, ``--help`` printed with exit status 0, a bad or
  missing flag one line with exit status 2.

  Args:
    flag_values: The command's flags.
    argv: The arguments, without the program name.
    prog: ``python -m fcn_jax.<name>``, for the usage line.
    doc: What the command does (its module docstring).
    epilog: Printed after the flags by ``--help``.
    positional: The metavar of the positional arguments the command takes
      (one or more); None: it takes none.
    aliases: Old spellings, as for :func:`normalise_argv`.

  Returns:
    The positional arguments.
  """
  def known(name: str) -> bool:
    name = name[2:]
    return name in flag_values or (name.startswith("no")
                                   and name[2:] in flag_values)

  argv = normalise_argv([str(a) for a in argv], known, aliases)
  usage = f"usage: {prog} [flags]" + (f" {positional} [{positional} ...]"
                                      if positional else "")
  if any(a.split("=")[0] in HELP_FLAGS for a in argv):
    print("\n\n".join(part for part in (
        usage, doc.strip(), "flags:\n" + _flags_help(flag_values),
        epilog.strip()) if part))
    sys.exit(0)
  flag_values.unparse_flags()  # Defaults again for each in-process call.
  flag_values.set_gnu_getopt(True)  # Flags after positional arguments.
  try:
    rest = flag_values([prog, *argv])[1:]
  except flags.UnrecognizedFlagError as e:  # absl drops the dashes.
    fail(f"unknown flag --{e.flagname} ({usage}; --help lists the flags)")
  except flags.Error as e:
    fail(f"{e} ({usage}; --help lists the flags)")
  if positional and not rest:
    fail(f"give at least one {positional} ({usage})")
  if not positional and rest:
    fail(f"unexpected arguments {rest} ({usage})")
  return rest


def check_overwrite(paths: Sequence[str], overwrite: bool,
                    what: str = "--output") -> None:
  """The one overwrite rule: refuses to replace existing outputs that the
  user named, unless ``--overwrite``.

  Raises:
    FileExistsError: One of ``paths`` exists; the message names it and the
      flag.
  """
  if overwrite:
    return
  existing = [p for p in paths if os.path.lexists(p)]
  if existing:
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    raise FileExistsError(
        f"{what}: {existing[0]}{more} exists; pass --overwrite to replace it, "
        "or choose another output")


def _config_file(argv: Sequence[str]) -> str | None:
  """The ``--config`` file named on the command line, if any (the last
  one, as absl takes the last value of a flag)."""
  found = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      found = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def _line_in(error: BaseException, path: str | None) -> int | None:
  """The line of ``path`` where ``error`` was raised (its last frame there)."""
  if not path:
    return None
  path = os.path.abspath(path)
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == path]
  return lines[-1] if lines else None


def _known_absl_flag(name: str) -> bool:
  name = name[2:]
  return name in flags.FLAGS or (name.startswith("no")
                                 and name[2:] in flags.FLAGS)


def parse_flags(argv: list[str], aliases: dict[str, str] | None = None
                ) -> list[str]:
  """absl flag parsing with one-line errors: a bad flag, the unknown config
  field among the overrides, or a config file that does not load.

  Old hyphenated spellings are accepted (:func:`normalise_argv`), and
  ``--help`` exits 0 (absl's own exits 1).
  """
  argv = [argv[0], *normalise_argv(argv[1:], _known_absl_flag, aliases)]
  _check_override_names(argv[1:])
  config_file = _config_file(argv)
  if config_file is not None:
    check_config_file(config_file)
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:
    if any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]) and e.code == 1:
      sys.exit(0)  # The help was printed: not a failure.
    raise
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull "
          "to see help on flags.", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  except SyntaxError as e:
    fail(f"the config file {e.filename} has a syntax error at line "
         f"{e.lineno}: {e.msg}")
  except Exception as e:  # pylint: disable=broad-except
    config_file = _config_file(argv)
    line = _line_in(e, config_file)
    if line is not None:  # Raised by the config file's own code.
      fail(f"the config file {config_file} fails at line {line}: "
           f"{type(e).__name__}: {e}")
    if not isinstance(e, (AttributeError, KeyError)):
      raise
    # ml_collections: "'name'" or "'name'\nDid you mean "other" instead of
    # "name"?": the unknown field is the first word.
    text = str(e.args[0] if e.args else e)
    first = re.search(r"[A-Za-z_][A-Za-z0-9_]*", text)
    missing = first[0] if first else text
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    overrides = [a.split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    named = [o for o in overrides if missing in o.split(".")[1:]]
    fail(f"unknown config field {' '.join(named or overrides)} "
         f"({missing!r} is not a field"
         + (f"; did you mean {suggestion[1]!r}?" if suggestion else "")
         + "); every field, with its meaning, is in "
         "fcn_jax/default_config.py")
  return []  # Unreachable.


def _check_override_names(argv: Sequence[str]) -> None:
  """Refuses a hyphen in a ``--config.`` override's field in one line
  (ml_collections would fail on it with a traceback)."""
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--config.") and "-" in name[2:]:
      fail(f"{name}: config fields are spelled with underscores: "
           f"--{name[2:].replace('-', '_')}")


def check_config_file(spec: str) -> None:
  """Loads a ``--config`` file as absl will, failing in one line where it
  cannot: no such file, a syntax error or an exception in its code (with
  the line), no ``get_config``, a ``get_config`` that returns no ConfigDict,
  or a field that :mod:`fcn_jax.default_config` does not have (a misspelt
  ``config.optim.base_rl = ...`` inside the file would otherwise be
  accepted, and saved, without effect).

  ``spec`` is ``PATH`` or ``PATH:ARG`` (ml_collections passes ``ARG`` to
  ``get_config``). The file is run here and again by absl; config files
  only build a ConfigDict.
  """
  # pylint: disable=g-import-not-at-top  # Only commands with configs.
  import importlib.util
  import ml_collections
  from fcn_jax import default_config
  path, *arg = spec.split(":", 1)
  if not os.path.isfile(path):
    fail(f"cannot load the config file {path}: "
         + ("no such file" if not os.path.exists(path) else "not a file"))
  try:
    module_spec = importlib.util.spec_from_file_location(
        "_fcn_jax_config_check", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      fail(f"the config file {path} defines no get_config(): a config file "
           "defines get_config() returning a ConfigDict (see "
           "configs/quickstart.py)")
    config = get_config(*arg)
  except SyntaxError as e:
    fail(f"the config file {path} has a syntax error at line "
         f"{e.lineno}: {e.msg}")
  except Exception as e:  # pylint: disable=broad-except  # The file's code.
    line = _line_in(e, path)
    fail(f"the config file {path} fails"
         + (f" at line {line}" if line is not None else "")
         + f": {type(e).__name__}: {e}")
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f"get_config() of the config file {path} returned "
         + ("None (a missing return statement?)" if config is None else
            f"a {type(config).__name__}") + ", not a ConfigDict")
  unknown = default_config.unknown_fields(config)
  if unknown:
    field, suggestion = unknown[0]
    fail(f"unknown config field config.{field} in the config file {path}"
         + (f" (did you mean {suggestion!r}?)" if suggestion else "")
         + "; every field, with its meaning, is in "
         "fcn_jax/default_config.py")


def loaded_config(flag_name: str = "config") -> Any:
  """The value of a config-file flag, failing in one line if the file did
  not load (absl loads it lazily)."""
  config = flags.FLAGS[flag_name].value
  try:
    config.get("mode")  # A config file that failed to load raises here.
  except OSError as e:
    path = _config_file(sys.argv)
    cause = e.__cause__ or e
    reason = ("no such file" if path and not os.path.exists(path) else
              (getattr(cause, "strerror", None)
               or str(cause).strip().splitlines()[-1].strip()))
    fail(f"cannot load the config file {path or ''}: {reason}")
  except SyntaxError as e:
    fail(f"the config file {e.filename} has a syntax error at line "
         f"{e.lineno}: {e.msg}")
  return config


def start(xla_cpu_flags: str | None = None, *,
          multi_process: bool = True,
          compilation_cache_dir: str | None = None) -> str:
  """The start-up of every command that runs a model; call it first.

  Args:
    xla_cpu_flags: ``tuned`` or ``default`` (:mod:`fcn_jax.xla_flags`);
      None reads ``$FCN_JAX_XLA_CPU_FLAGS`` (default ``tuned``).
    multi_process: Initialise multi-process JAX when the environment
      describes a multi-process run (:mod:`fcn_jax.distributed`); commands
      that run on one host's devices only (predict, export) pass False.
    compilation_cache_dir: JAX's persistent compilation cache
      (:mod:`fcn_jax.compilation_cache`; ``config.compilation_cache_dir``);
      None: its default directory; empty: off.

  Returns:
    Which XLA:CPU flags apply (:func:`fcn_jax.xla_flags.configure`).
  """
  # pylint: disable=g-import-not-at-top  # Only commands start JAX.
  import jax
  from fcn_jax import distributed
  from fcn_jax import logging_utils
  applied = run_reporting_errors(xla_flags.configure, xla_cpu_flags)
  logging_utils.quiet_library_logs()
  run_reporting_errors(compilation_cache.configure, compilation_cache_dir)
  if multi_process:
    # Before anything touches a device; a no-op on one host (see launch/).
    run_reporting_errors(distributed.maybe_initialize)
  logging.info("JAX process %d/%d, local devices: %s; XLA:CPU flags %s.",
               jax.process_index(), jax.process_count(), jax.local_devices(),
               applied)
  return applied


def exit_code(fn: Callable[..., int | None], *args: Any,
              **kwargs: Any) -> int:
  """Runs a command's body: bad input (:data:`USER_ERRORS`) is one line on
  stderr and exit status 2 (:data:`USAGE_EXIT_CODE`), never a traceback;
  any other exception propagates with its traceback."""
  try:
    return fn(*args, **kwargs) or 0
  except USER_ERRORS as e:
    logging.debug("Traceback:", exc_info=True)
    print(f"error: {e}", file=sys.stderr)
    return USAGE_EXIT_CODE


def check_no_arguments(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    fail(f"Unexpected command-line arguments: {list(argv[1:])}")


def run_reporting_errors(fn: Callable[..., Any], *args: Any,
                         **kwargs: Any) -> Any:
  """Runs ``fn``; bad input (:data:`USER_ERRORS`) ends the process with one
  line, no traceback; any other exception propagates with its traceback."""
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    logging.debug("Traceback:", exc_info=True)
    fail(str(e))


def run_main(main: Callable[..., int | None], *,
             flags_parser: Callable[[list[str]], Any] | None = None,
             interrupted: str = "the command did not finish") -> NoReturn:
  """Runs a command from its ``__main__`` block, the one entry point of
  every ``python -m fcn_jax.<name>``.

  The absl commands (``flags_parser`` given) run under ``absl.app.run``;
  the others as ``sys.exit(main())``. A Ctrl-C that the command does not
  handle itself (during start-up: config resolution, dataset checks,
  compilation; or in a command without its own handling) ends it with one
  line on stderr, ``Interrupted (Ctrl-C); <interrupted>.``, and exit
  status 130 (:data:`INTERRUPTED_EXIT_CODE`) instead of a
  ``KeyboardInterrupt`` traceback. A training handles Ctrl-C itself once
  its loop is set up (:mod:`fcn_jax.training.interrupts`: the first saves
  and stops, a second exits at once). In-process calls of a command's
  ``main`` (tests, notebooks) do not come here: there a Ctrl-C stays a
  ``KeyboardInterrupt``.

  Args:
    main: The command's main function.
    flags_parser: absl's ``flags_parser`` (the absl commands).
    interrupted: What is true after a Ctrl-C: what was (not) written, and
      how to go on.
  """
  try:
    if flags_parser is not None:
      app.run(main, flags_parser=flags_parser)  # Exits.
    sys.exit(main())
  except KeyboardInterrupt:
    # A second Ctrl-C (while clean-ups run at exit) ends the process at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print(f"Interrupted (Ctrl-C); {interrupted}.", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT_CODE)
