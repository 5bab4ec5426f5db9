"""Process-wide settings the backend modules make for speed, and the user's way to override them."""

import os
import subprocess
import sys

import pytest

from tests.helpers.runner import run_runner

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


CACHED_RUN = """
import sys
import jax
import numpy as np

hits = []
jax.monitoring.register_event_listener(
    lambda name, **kwargs: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
import unstable_ppo

unstable_ppo.use_compilation_cache(sys.argv[1])
ppo = unstable_ppo.PPO("CartPole-v1", seed=0, num_envs=2, num_steps=16, batch_size=16, num_epochs=2)
ppo.learn(64)
print(len(hits), repr(float(sum(np.sum(w, dtype=np.float64) for w in ppo.model.get_weights()))))
"""


def test_jax_compilation_cache_is_reused_by_the_next_run_and_gives_the_same_training(tmp_path):
    """The second run loads the acting and update programs from disk instead of compiling them."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("the compilation cache is JAX's")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    cache = tmp_path / "xla"
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", CACHED_RUN, str(cache)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        hits, weights = out.stdout.strip().splitlines()[-1].split()
        runs.append((int(hits), weights))
    assert any(p.name.startswith("jit_epoch") for p in cache.iterdir())
    assert runs[0][0] == 0 and runs[1][0] >= 2  # the acting function and the epoch
    assert runs[0][1] == runs[1][1]


def _run_with_cache(tmp_path, cache):
    return run_runner(f"--compilation_cache_dir={cache}", f"--logdir={tmp_path / 'run'}", "--num_envs=2",
                      "--num_steps=16", "--batch_size=16", "--num_epochs=1", "--num_episodes=1",
                      "--eval_episodes=1", "--verbose=0", timeout=300)


def test_runner_compilation_cache_flag(tmp_path):
    """JAX: the run fills the cache; a directory it cannot write is a one-line error before any work."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("the compilation cache is JAX's")
    out = _run_with_cache(tmp_path, tmp_path / "xla")
    assert out.returncode == 0, out.stderr[-3000:]
    assert any(p.name.startswith("jit_epoch") for p in (tmp_path / "xla").iterdir())
    (tmp_path / "file").write_text("")
    out = _run_with_cache(tmp_path / "second", tmp_path / "file" / "xla")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot write to the compilation cache directory {tmp_path / 'file' / 'xla'}: ")
    assert not (tmp_path / "second").exists()


def test_compilation_cache_on_another_backend_is_a_one_line_error(tmp_path):
    import keras

    from unstable_ppo.backend import use_compilation_cache

    backend = keras.backend.backend()
    if backend == "jax":
        pytest.skip("jax has the cache")
    with pytest.raises(ValueError, match=f"needs the jax backend .*; {backend} has none"):
        use_compilation_cache(str(tmp_path / "xla"))
    out = _run_with_cache(tmp_path, tmp_path / "xla")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: --compilation_cache_dir: a compilation cache needs the jax backend (XLA's persistent cache); "
        f"{backend} has none")
    assert not (tmp_path / "run").exists() and not (tmp_path / "xla").exists()
