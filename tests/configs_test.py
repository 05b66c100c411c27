"""configs/: every config file resolves to the values it had before the
families were built from one function each (``tests/fixtures/configs/``
records, field by field, what each file set apart from the defaults of
``fcn_jax/default_config.py`` at commit 25e523c), and the family files take
their variant as big_vision's ``get_config(arg)`` does."""

import json

import pytest

from fcn_jax import default_config
from tests import helpers

BEFORE = json.loads((helpers.REPO / "tests" / "fixtures" / "configs" /
                     "before.json").read_text())


def _check_against_before(name, config):
  base = helpers.flat_values(default_config.get_config().to_dict())
  got = helpers.flat_values(config.to_dict())
  want = BEFORE[name]
  assert sorted(set(want) - set(got)) == []
  changed = {}
  for field, value in got.items():
    expected = want[field] if field in want else repr(base.get(field))
    if repr(value) != expected:
      changed[field] = (expected, repr(value))
  assert not changed, f"{name}: (before, now) {changed}"


def test_every_config_file_is_recorded():
  files = sorted(p.stem for p in helpers.CONFIGS.glob("*.py")
                 if p.stem not in FAMILIES)
  assert files == sorted(BEFORE)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_config_file_resolves_to_the_same_values_as_before(name):
  _check_against_before(name, helpers.load_config(name))


# Family file -> {its argument: the per-net file it equals}.
FAMILIES = {
    "pascalcontext": {"fcn32s": "pascalcontext_fcn32s",
                      "fcn16s": "pascalcontext_fcn16s",
                      "fcn8s": "pascalcontext_fcn8s"},
    "siftflow": {"fcn32s": "siftflow_fcn32s", "fcn16s": "siftflow_fcn16s",
                 "fcn8s": "siftflow_fcn8s"},
    "nyud": {"color": "nyud_fcn32s_color", "hha": "nyud_fcn32s_hha",
             "color_d": "nyud_fcn32s_color_d",
             "color_hha": "nyud_fcn32s_color_hha"},
}


@pytest.mark.parametrize("family,arg,name", [
    (family, arg, name) for family, args in FAMILIES.items()
    for arg, name in args.items()])
def test_family_file_with_its_argument_is_the_per_net_config(family, arg,
                                                             name):
  _check_against_before(name, helpers.load_config(family, arg))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_file_names_its_variants_on_a_bad_argument(family):
  with pytest.raises(ValueError, match=f"configs/{family}.py.*"
                     + ".*".join(FAMILIES[family])):
    helpers.load_config(family, "fcn4s")
