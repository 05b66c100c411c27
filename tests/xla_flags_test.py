"""fcn_jax.xla_flags: the XLA:CPU flags the training entry point sets."""

import pytest

from fcn_jax import errors
from fcn_jax import xla_flags


@pytest.fixture
def fresh_process(monkeypatch):
  """A process whose JAX backend has not started, with no XLA_FLAGS."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv(xla_flags.ENV_VAR, raising=False)
  monkeypatch.setattr(xla_flags, "backend_started", lambda: False)
  return monkeypatch


def test_tuned_by_default_adds_the_flags_once(fresh_process):
  import os  # pylint: disable=g-import-not-at-top
  fresh_process.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert xla_flags.configure() == "tuned"
  assert xla_flags.configure() == "tuned"
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                     + xla_flags.TUNED_CPU_FLAGS)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_default_leaves_xla_flags_alone(fresh_process, how):
  import os  # pylint: disable=g-import-not-at-top
  if how == "environment":
    fresh_process.setenv(xla_flags.ENV_VAR, "default")
    assert xla_flags.configure() == "default"
  else:
    assert xla_flags.configure("default") == "default"
  assert "XLA_FLAGS" not in os.environ


def test_unknown_choice_names_the_switches(fresh_process):
  fresh_process.setenv(xla_flags.ENV_VAR, "fast")
  with pytest.raises(errors.UserError, match="FCN_JAX_XLA_CPU_FLAGS.*'fast'"):
    xla_flags.configure()


def test_too_late_once_a_backend_runs(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  jax.devices()
  monkeypatch.setenv("XLA_FLAGS", "")
  assert xla_flags.backend_started()
  assert xla_flags.configure("tuned") == "too_late"
  assert xla_flags.TUNED_CPU_FLAGS not in __import__("os").environ["XLA_FLAGS"]


def test_the_suite_runs_under_the_flags_the_commands_set():
  # tests/conftest.py calls configure() before JAX starts, as the commands
  # do (unless told FCN_JAX_XLA_CPU_FLAGS=default).
  import os  # pylint: disable=g-import-not-at-top
  if os.environ.get(xla_flags.ENV_VAR, "tuned") == "default" or (
      not xla_flags.flags_supported(xla_flags.TUNED_CPU_FLAGS)):
    pytest.skip("the suite was asked for (or given) XLA's default flags")
  assert xla_flags.TUNED_CPU_FLAGS in os.environ["XLA_FLAGS"]
