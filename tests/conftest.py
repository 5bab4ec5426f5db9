"""Tests run once per Keras backend: set KERAS_BACKEND before pytest (see .ci/run).

Shared fixtures: a fresh Keras session for every test, `small_ppo` (a PPO factory with
small settings) and `run_runner` (the runner in a subprocess). Shared non-fixture code
lives in tests/helpers/.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import runner  # noqa: E402
from tests.helpers.settings import SMALL_4X16  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    yield


@pytest.fixture
def small_ppo():
    """A factory: `small_ppo(env="CartPole-v1", settings=SMALL_4X16, **kwargs)` is `PPO(env, **settings, **kwargs)`.

    `settings` is one of tests/helpers/settings.py's dicts; a keyword given in both is an error, as with PPO.
    """
    from unstable_ppo import PPO

    def make(env="CartPole-v1", settings=SMALL_4X16, **kwargs):
        return PPO(env, **settings, **kwargs)

    return make


@pytest.fixture
def run_runner():
    """`run_runner(*flags, cwd=None, env=None, timeout=600, wait=True, **popen)`: `python -m unstable_ppo.run`
    in a subprocess (tests/helpers/runner.py): a CompletedProcess, or with `wait=False` the running Popen."""
    return runner.run_runner


def pytest_addoption(parser):
    parser.addoption("--skip-backend-independent", action="store_true",
                     help="deselect the tests marked backend_independent or cross_backend (python -m tests passes it to every "
                          "backend after the first, so that each of them runs once)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-backend-independent"):
        kept = [item for item in items
                if item.get_closest_marker("backend_independent") is None and item.get_closest_marker("cross_backend") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
