"""The OpenMP spin count is chosen before torch starts its thread pool, and the user's wins."""
import os
import re
import subprocess
import sys

import pytest

from reportgen import runtime


def _runtime_env(extra: dict) -> dict[str, str]:
    """What the OpenMP runtime itself reports (OMP_DISPLAY_ENV) in a fresh interpreter that
    imports reportgen's CLI and then runs a torch op."""
    env = {k: v for k, v in os.environ.items() if k not in runtime.USER_KNOBS}
    env.update(extra, OMP_DISPLAY_ENV="VERBOSE")
    code = "import reportgen.cli, torch; torch.ones(4).sum()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in out.stderr:
        pytest.skip("this torch build's OpenMP runtime does not report its settings")
    return dict(re.findall(r"^\s*(\w+) = '([^']*)'", out.stderr, flags=re.M))


def test_spin_count_is_in_place_before_torch_loads_openmp():
    assert _runtime_env({}).get("GOMP_SPINCOUNT") == runtime.SPIN_COUNT


def test_the_users_own_setting_wins():
    assert _runtime_env({"GOMP_SPINCOUNT": "12345"}).get("GOMP_SPINCOUNT") == "12345"
    assert _runtime_env({"OMP_WAIT_POLICY": "ACTIVE"}).get("GOMP_SPINCOUNT") != runtime.SPIN_COUNT
    assert (_runtime_env({"REPORTGEN_OPENMP": "default"}).get("GOMP_SPINCOUNT")
            != runtime.SPIN_COUNT)


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
