"""Process-wide settings the backend modules make for speed, and the user's way to override them."""

import os
import subprocess
import sys

import pytest

PROBE = "import unstable_ppo.backend, jax; print(jax.config.values['jax_cpu_enable_async_dispatch'])"


@pytest.mark.parametrize("override, expected", [(None, "False"), ("1", "True")])
def test_jax_backend_runs_cpu_computations_inline_unless_the_user_says_otherwise(override, expected):
    """Async dispatch costs each tiny acting call a thread wake-up; JAX_CPU_ENABLE_ASYNC_DISPATCH wins."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("JAX_CPU_ENABLE_ASYNC_DISPATCH", None)
    if override is not None:
        env["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = override
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected
