"""The OpenMP spin count is chosen before torch starts its thread pool, and the user's wins."""
import os
import re
import subprocess
import sys

import pytest

from reportgen import runtime


def _runtime_envs(*extras: dict) -> list[dict[str, str]]:
    """What the OpenMP runtime itself reports (OMP_DISPLAY_ENV) in fresh interpreters (one per
    environment, started together: each import of torch takes seconds) that import
    reportgen's CLI and then run a torch op."""
    code = "import reportgen.cli, torch; torch.ones(4).sum()"
    procs = []
    for extra in extras:
        env = {k: v for k, v in os.environ.items() if k not in runtime.USER_KNOBS}
        env.update(extra, OMP_DISPLAY_ENV="VERBOSE")
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    found = []
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        if "OPENMP DISPLAY ENVIRONMENT" not in err:
            pytest.skip("this torch build's OpenMP runtime does not report its settings")
        found.append(dict(re.findall(r"^\s*(\w+) = '([^']*)'", err, flags=re.M)))
    return found


def test_spin_count_is_in_place_before_torch_loads_openmp():
    assert _runtime_envs({})[0].get("GOMP_SPINCOUNT") == runtime.SPIN_COUNT


def test_the_users_own_setting_wins():
    own, active, default = _runtime_envs({"GOMP_SPINCOUNT": "12345"},
                                         {"OMP_WAIT_POLICY": "ACTIVE"},
                                         {"REPORTGEN_OPENMP": "default"})
    assert own.get("GOMP_SPINCOUNT") == "12345"
    assert active.get("GOMP_SPINCOUNT") != runtime.SPIN_COUNT
    assert default.get("GOMP_SPINCOUNT") != runtime.SPIN_COUNT


def test_apply_leaves_user_choices_and_a_loaded_torch_alone(monkeypatch):
    assert runtime.apply_thread_defaults({"OMP_WAIT_POLICY": "PASSIVE"}) == {}
    env: dict[str, str] = {}
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert runtime.apply_thread_defaults(env) == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    assert env == {"GOMP_SPINCOUNT": runtime.SPIN_COUNT}
    monkeypatch.setitem(sys.modules, "torch", object())
    assert runtime.apply_thread_defaults({}) == {}  # too late to matter: say nothing was set


def test_competitors_see_the_users_environment(monkeypatch):
    monkeypatch.setattr(runtime, "applied", {"GOMP_SPINCOUNT": runtime.SPIN_COUNT})
    monkeypatch.setenv("GOMP_SPINCOUNT", runtime.SPIN_COUNT)
    assert "GOMP_SPINCOUNT" not in runtime.user_environment()
    assert "reportgen's default" in runtime.describe()
