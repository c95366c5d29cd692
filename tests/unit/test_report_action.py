"""pipfeed.feed.report's options_of: the play's variables checked against argument specs of the
collection's roles, with Ansible's own validator and message, in the task that also checks the
shared settings (roles/pipfeed_common/tasks/main.yml)."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleActionFail

from tests.files import plugin

pytestmark = pytest.mark.unit
role_specs = plugin("plugin_utils.role_specs")

SHARED = {"role": "pipfeed_common", "entry": "shared"}
CONFIG = {"role": "pipfeed_config", "entry": "preflight"}


class Values:
    """Stands in for Ansible's templar: the values are already plain."""

    @staticmethod
    def template(value):
        return value


def check(options_of, task_vars):
    action = plugin("action.report").ActionModule.__new__(plugin("action.report").ActionModule)
    action._templar = Values()
    return action._check_options(options_of, task_vars)


def test_right_values_pass():
    assert check([SHARED, CONFIG], {"pipfeed_mode": "extra", "pipfeed_config_uv_install": True,
                                    "unrelated": object()}) == {}


def test_every_wrong_option_of_every_entry_point_is_named_in_one_failure():
    failed = check([SHARED, CONFIG], {"pipfeed_mode": "mirror",
                                      "pipfeed_config_uv_install": "maybe"})
    assert failed["failed"] is True
    assert failed["msg"].startswith("Validation of arguments failed:\n")
    assert "value of pipfeed_mode must be one of: extra, primary, offline, got: mirror" in failed["msg"]
    assert any("pipfeed_config_uv_install" in line for line in failed["argument_errors"])
    assert failed["validate_args_context"] == {"type": "role",
                                               "name": "pipfeed_common, pipfeed_config",
                                               "argument_spec_name": "shared, preflight"}


def test_an_option_of_an_entry_point_not_asked_for_is_not_checked():
    assert check([SHARED], {"pipfeed_config_uv_install": "maybe"}) == {}


@pytest.mark.parametrize("options_of, said", [
    ([{"role": "pipfeed_common", "entry": "main"}], "has no entry point main"),
    ([{"role": "no_such_role", "entry": "main"}], "is not a role of the collection"),
    (["pipfeed_common"], "options_of must be a list of"),
])
def test_a_wrong_entry_point_is_an_error_naming_what_there_is(options_of, said):
    with pytest.raises(AnsibleActionFail, match=said):
        check(options_of, {})


def test_the_specs_of_every_role_are_read_once():
    roles = role_specs.load_all()
    assert {"pipfeed_common", "pipfeed_config", "pipfeed_credential_helper",
            "pipfeed_wheelhouse"} <= set(roles)
    first = role_specs.entry_points("pipfeed_config")
    assert role_specs.entry_points("pipfeed_config") is first
    assert "shared" in role_specs.entry_points("pipfeed_common")
    assert "main" not in role_specs.entry_points("pipfeed_common")
