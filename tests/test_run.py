"""The command-line runner: a real short run, and one-line errors for bad flags."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*flags, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "unstable_ppo.run", *flags], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_short_run_trains_saves_and_evaluates(tmp_path):
    backend = keras.backend.backend()
    proc = run("--env_id=CartPole-v1", "--num_envs=2", "--num_steps=32", "--num_episodes=3",
               "--num_epochs=2", "--batch_size=32", "--seed=3", "--eval_episodes=2", f"--backend={backend}",
               f"--logdir={tmp_path}/log/{{env_id}}/{{rank}}", "--rank=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logdir = tmp_path / "log" / "CartPole-v1" / "4"
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["total_timesteps"] == 2 * 32 * 3 and metrics["backend"] == backend
    assert metrics["eval_episodes"] == 2
    assert (logdir / "model" / "model.keras").is_file() and (logdir / "model" / "ppo.json").is_file()
    assert "mean_return=" in proc.stdout
    assert sorted(os.listdir(logdir / "monitor")) == ["0.monitor.csv", "1.monitor.csv"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))
    log = (logdir / "training.log").read_text()
    assert "update 3:" in log and "mean_return=" in log


def test_top_level_run_py_is_the_same_runner(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--helpshort"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "--num_envs" in proc.stdout and "--total_timesteps" in proc.stdout  # absl exits 1 after help


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env_id=NoSuchEnv-v0"], "NoSuchEnv"),
        (["--num_envs=0"], "num_envs must be a positive integer"),
        (["--batch_size=100000"], "batch_size 100000 is larger than the rollout"),
        (["--lr=0"], "lr must be > 0"),
        (["--num_episodes=-1"], "num_episodes must be a positive integer"),
        (["--logdir=/tmp/{user}/x"], "unknown template key {user}"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, message):
    proc = run(*flags, f"--model_dir={tmp_path}/m", cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "log").exists()  # nothing written before the error


def test_play_evaluates_a_saved_model(tmp_path):
    from unstable_ppo import PPO

    PPO("CartPole-v1", seed=0, num_envs=2, num_steps=32, batch_size=32).save(tmp_path / "m")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path / 'm'}",
                           "--episodes=3", "--seed=1"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [l.split(":")[0] for l in lines[:3]] == ["episode 1", "episode 2", "episode 3"]
    assert lines[-1].startswith("mean_return=") and lines[-1].endswith("episodes=3")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_play_on_a_bad_model_dir_is_a_one_line_error(tmp_path, damage):
    if damage == "corrupt":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.keras").write_bytes(b"junk")
        (tmp_path / "m" / "ppo.json").write_text("{}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path / 'm'}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
