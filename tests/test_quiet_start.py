"""A quiet, fast start: flags are checked before Keras is imported, and TensorFlow's C++
start-up lines stay off the console on every backend (unless --verbose=2)."""

import os
import subprocess
import sys

import keras
import pytest

from unstable_ppo import quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()

# Runs the runner as `python -m unstable_ppo.run` does, and reports at exit which heavy modules it imported.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED=" + ",".join(m for m in ("keras", "tensorflow", "jax", "torch")
                                                      if m in sys.modules), file=sys.stderr))
sys.argv = ["unstable_ppo.run"] + sys.argv[1:]
runpy.run_module("unstable_ppo.run", run_name="__main__")
"""

STARTUP_LINES = (
    b"I0000 00:00:1796160119.365931    3362 port.cc:153] oneDNN custom operations are on. You may see ...\n",
    b"I0000 00:00:1796160119.366366    3362 cudart_stub.cc:31] Could not find cuda drivers on your machine\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"W0000 00:00:1796160119.366366    3362 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow\n",
)
REAL_LINES = (
    b"E0000 00:00:1796160119.366366    3362 some_kernel.cc:12] a real C++ error\n",
    b"/x/keras/src/foo.py:3: UserWarning: a real warning\n",
    b"error: num_envs must be a positive integer, got 0\n",
    b"I0000 is how an unrelated line might start\n",
)


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user has: nothing set
    env.pop("UNSTABLE_PPO_TF_STARTUP_LOGS", None)
    return env


def _runner(*flags, cwd):
    return subprocess.run([sys.executable, "-c", PROBE, f"--backend={BACKEND}", *flags], env=_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("line", STARTUP_LINES)
def test_tensorflow_startup_lines_are_noise(line):
    assert quiet.is_startup_noise(line)


@pytest.mark.parametrize("line", REAL_LINES)
def test_errors_and_warnings_are_not_noise(line):
    assert not quiet.is_startup_noise(line)


def test_the_held_back_output_is_replayed_in_order_without_the_noise():
    # In a child process: pytest's own capture would bypass fd 2 for Python's sys.stderr.
    script = f"""
import os, sys
from unstable_ppo import quiet
print("before", file=sys.stderr, flush=True)
with quiet.startup_lines_dropped():
    for startup, real in zip({STARTUP_LINES!r}, {REAL_LINES!r}):
        os.write(2, startup)
        os.write(2, real)
    print("a Python line on stderr", file=sys.stderr)
print("after", file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, timeout=60)
    assert proc.stderr == b"before\n" + b"".join(REAL_LINES) + b"a Python line on stderr\nafter\n"


def test_output_is_replayed_when_the_block_raises(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "_show", False)  # an in-process --verbose=2 run may have turned it on
    with pytest.raises(ImportError):
        with quiet.startup_lines_dropped():
            os.write(2, STARTUP_LINES[0] + b"Traceback (most recent call last): ...\n")
            raise ImportError("no such module")
    assert capfd.readouterr().err == "Traceback (most recent call last): ...\n"


@pytest.mark.backend_independent  # refused before Keras starts
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_envs=0"], "num_envs must be a positive integer"),
        (["--clip_range=-1"], "clip_range must be > 0"),
        (["--batch_size=100000"], "batch_size 100000 is larger than the rollout"),
        (["--reward_transform=bad"], "unknown reward_transform 'bad'"),
        (["--hidden_sizes=64,x"], "--hidden_sizes must be comma-separated integers"),
        (["--env_id=NoSuchEnv-v0"], "NoSuchEnv"),
        (["--gamma=2"], "gamma must be in (0, 1]"),
        (["--eval_deterministic=maybe"], "--eval_deterministic"),
        (["--recurrent", "--num_steps=32", "--timestep_size=24"], "timestep_size 24 does not divide num_steps 32"),
        (["--flagfile=bad.flags"], "lr must be > 0"),
    ],
)
def test_a_bad_flag_is_one_line_before_keras_is_imported(tmp_path, flags, message):
    (tmp_path / "bad.flags").write_text("--num_envs=2\n--lr=-1\n")
    proc = _runner(*flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert lines[-1] == "IMPORTED=", proc.stderr[-2000:]  # neither Keras nor any backend was imported
    assert len(lines) == 2 and lines[0].startswith("error:") and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "log").exists()


def test_a_bad_activation_is_one_line_without_startup_noise(tmp_path):
    proc = _runner("--activation=bogus", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: unknown activation 'bogus'"), proc.stderr[-2000:]


SHORT = ("--env_id=CartPole-v1", "--num_envs=2", "--num_steps=32", "--num_epochs=1", "--batch_size=32",
         "--num_episodes=1", "--eval_episodes=1", "--noenv_defaults")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only a TensorFlow run starts TensorFlow")
def test_a_run_starts_without_tensorflows_startup_lines_unless_verbose_2(tmp_path):
    quiet_run = _runner(*SHORT, "--verbose=0", f"--logdir={tmp_path}/a", cwd=tmp_path)
    assert quiet_run.returncode == 0, quiet_run.stderr[-3000:]
    assert "tensorflow" in quiet_run.stderr.splitlines()[-1]
    assert not [l for l in quiet_run.stderr.splitlines() if quiet.is_startup_noise(l.encode())], quiet_run.stderr
    loud = _runner(*SHORT, "--verbose=2", f"--logdir={tmp_path}/b", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr[-3000:]
    # The same run with --verbose=2 shows them: the filter above had something to remove.
    assert [l for l in loud.stderr.splitlines() if quiet.is_startup_noise(l.encode())], loud.stderr


@pytest.mark.skipif(BACKEND == "tensorflow", reason="a TensorFlow run needs TensorFlow")
def test_a_jax_or_torch_run_never_imports_tensorflow(tmp_path):
    """Seeding, the TensorBoard writer, evaluation and saving (latest and best) all leave it alone:
    seconds of start-up and its C++ logging saved on every run."""
    proc = _runner(*SHORT, "--verbose=1", f"--logdir={tmp_path}/a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stderr.splitlines()[-1]
    assert imported.startswith("IMPORTED=keras") and BACKEND in imported, imported
    assert "tensorflow" not in imported.split("=")[1].split(","), proc.stderr[-3000:]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "a"))
    assert "%|" not in proc.stderr  # not a terminal: no progress bar
    assert (tmp_path / "a" / "model" / "best" / "model.keras").is_file()
