"""The command-line runner: a real short run, and one-line errors for bad flags."""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

from tests.helpers.runner import ROOT, child_env, tensorboard_steps
from unstable_ppo.run_settings import CONFIG_DIR

SHORT = ("--env_id=CartPole-v1", "--num_envs=2", "--num_steps=32", "--num_epochs=2", "--batch_size=32",
         "--eval_episodes=2", "--verbose=2")


def test_short_run_trains_saves_and_evaluates(tmp_path, run_runner):
    backend = keras.backend.backend()
    proc = run_runner(*SHORT, "--num_episodes=3", "--seed=3", "--eval_interval=2", "--save_interval=2",
                      f"--backend={backend}", f"--logdir={tmp_path}/log/{{env_id}}/{{rank}}", "--rank=4",
                      "--verbose=1", "--log_interval=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Not a terminal: no progress bar, whose carriage returns would make one endless line of a log file.
    # (text=True reads a carriage return as a newline: look for the bar itself, "100%|####|".)
    assert "%|" not in proc.stderr and "%|" not in proc.stdout and "update 3:" in proc.stdout
    logdir = tmp_path / "log" / "CartPole-v1" / "4"
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["total_timesteps"] == 2 * 32 * 3 and metrics["backend"] == backend
    assert metrics["num_updates"] == 3 and metrics["eval_episodes"] == 2
    assert {"mean_return", "std_return"} <= set(metrics["latest"]) and {"mean_return"} <= set(metrics["best"])
    for name in ("latest", "best"):
        assert (logdir / "model" / name / "model.keras").is_file()
        assert (logdir / "model" / name / "ppo.json").is_file()
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert saved["num_timesteps"] == 192 and saved["run"]["flags"]["num_steps"] == 32
    assert len(saved["run"]["evaluations"]) == 2  # after update 2, and at the end
    assert "eval at 128 steps" in proc.stdout and "latest" in proc.stdout and "best" in proc.stdout
    assert sorted(os.listdir(logdir / "monitor")) == ["0.monitor.csv", "1.monitor.csv"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))
    log = (logdir / "training.log").read_text()
    assert "update 3:" in log and "eval at 192 steps" in log


def test_resume_continues_counters_monitor_files_and_tensorboard(tmp_path, run_runner):
    logdir = tmp_path / "run"
    first = run_runner(*SHORT, "--num_episodes=2", "--save_interval=1", "--eval_interval=0", f"--logdir={logdir}")
    assert first.returncode == 0, first.stderr[-3000:]
    episodes_before = len((logdir / "monitor" / "0.monitor.csv").read_text().splitlines())
    again = run_runner(*SHORT, "--num_episodes=2", f"--logdir={logdir}")
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr

    other_env = run_runner("--resume", "--env_id=Acrobot-v1", f"--logdir={logdir}")
    assert other_env.returncode == 2 and other_env.stderr.splitlines()[-1].startswith(
        "error: --env_id=Acrobot-v1 differs from the resumed run's CartPole-v1"), other_env.stderr[-2000:]

    resumed = run_runner("--resume", "--num_episodes=4", f"--logdir={logdir}", "--verbose=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert saved["num_timesteps"] == 4 * 64 and saved["num_updates"] == 4
    assert saved["run"]["flags"]["num_envs"] == 2  # taken from the saved run, not the flag default
    lines = (logdir / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert sum(line.startswith("#") for line in lines) == 1 and len(lines) > episodes_before
    assert "update 3:" in resumed.stdout and "update 1:" not in resumed.stdout
    steps = sorted(tensorboard_steps(logdir, "train/value_loss"))
    assert steps == [64, 128, 192, 256]  # the curve continues: no step is written twice


def _scalars(tb_dir, tag):
    """(step, value) of every `tag` scalar in the event files, read raw (TensorBoard's own loader would
    purge out-of-order steps and hide a duplicate)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points = []
    for name in sorted(n for n in os.listdir(tb_dir) if n.startswith("events.out.tfevents")):
        for event in EventFileLoader(os.path.join(tb_dir, name)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    number = value.simple_value if value.HasField("simple_value") else \
                        float(tensor_util.make_ndarray(value.tensor))
                    points.append((event.step, number))
    return points


def test_resume_cuts_what_a_killed_run_wrote_after_its_last_checkpoint(tmp_path, run_runner):
    """A SIGKILLed run's Monitor rows and TensorBoard scalars after its last checkpoint are cut on
    resume: those steps are trained again, and the curves and CSVs must not count them twice."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = tmp_path / "run"
    first = run_runner(*SHORT, "--num_episodes=2", "--save_interval=1", "--eval_interval=0", f"--logdir={logdir}")
    assert first.returncode == 0, first.stderr[-3000:]
    monitor = logdir / "monitor" / "0.monitor.csv"
    at_checkpoint = monitor.read_text().splitlines()
    # What a run killed between update 2's checkpoint and update 4's would have left behind:
    with open(monitor, "a") as f:
        f.write("12345.0,17,99.0\n12345.0,18,99.5\n12345.0,1")  # two episodes, then a row torn by the kill
    writer = EventFileWriter(str(logdir), filename_suffix=".killed")
    for step in (192, 256):
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="train/value_loss", simple_value=999.0)])))
    writer.close()
    killed_file, = [n for n in os.listdir(logdir) if n.endswith(".killed")]
    with open(logdir / killed_file, "ab") as f:
        f.write(b"\x40\x00\x00")  # a record torn by the kill

    resumed = run_runner("--resume", "--num_episodes=4", f"--logdir={logdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = monitor.read_text().splitlines()
    assert lines[:len(at_checkpoint)] == at_checkpoint and not any("12345" in line for line in lines)
    assert len(lines) > len(at_checkpoint) and all(len(line.split(",")) == 3 for line in lines[1:])
    points = sorted(_scalars(logdir, "train/value_loss"))
    assert [step for step, _ in points] == [64, 128, 192, 256] and 999.0 not in [v for _, v in points]
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert saved["run"]["monitor_episodes"]["0.monitor.csv"] == len(lines) - 2


def test_resume_after_sigkill_loses_at_most_one_save_interval(tmp_path, run_runner):
    import signal
    import time

    logdir = tmp_path / "run"
    proc = run_runner(*SHORT, "--num_episodes=400", "--save_interval=1", "--eval_interval=0", "--verbose=0",
                      f"--logdir={logdir}", wait=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = logdir / "model" / "latest" / "ppo.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["num_updates"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["num_updates"]
    assert killed_at >= 3
    resumed = run_runner("--resume", f"--num_episodes={killed_at + 2}", f"--logdir={logdir}", "--verbose=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"update {killed_at + 1}:" in resumed.stdout
    assert json.loads(latest.read_text())["num_timesteps"] == (killed_at + 2) * 64


def test_sigterm_saves_a_checkpoint_and_resume_changes_no_setting(tmp_path, run_runner):
    import signal
    import time

    logdir = tmp_path / "run"
    proc = run_runner(*SHORT, "--num_episodes=400", "--save_interval=0", "--eval_interval=0", f"--logdir={logdir}",
                      wait=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = logdir / "training.log", time.time() + 300
    while time.time() < deadline and not (log.exists() and "update 2:" in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM, as a shell reports it
    assert "checkpoint saved" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert 2 <= saved["num_updates"] < 400

    changed = run_runner("--resume", "--lr=0.1", f"--logdir={logdir}")
    assert changed.returncode == 2 and "--lr=0.1 differs from the resumed run" in changed.stderr


@pytest.mark.backend_independent  # the runner's error handling, around whatever the backend raises
@pytest.mark.parametrize("verbose", [0, 2])
def test_an_exception_once_training_started_shows_its_traceback_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, verbose):
    """Not bad input: a bug (a user's encoder failing on a minibatch, say) needs its traceback, whatever
    --verbose is; the message says which checkpoint is intact and how to go on, and the exit is 1."""
    from tests.helpers.flag_strategies import run_in_process
    from unstable_ppo.ppo import PPO

    original, calls = PPO.update, []

    def update(self, buffer):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("Incompatible shapes: [16,3] vs. [16,4] (in a user's encoder)")
        return original(self, buffer)

    monkeypatch.setattr(PPO, "update", update)
    logdir = tmp_path / "run"
    outcome = run_in_process(["--env_id=CartPole-v1", "--noenv_defaults", "--num_envs=2", "--num_steps=16",
                              "--batch_size=16", "--num_epochs=1", "--num_episodes=5", "--save_interval=1",
                              "--eval_interval=0", "--eval_episodes=1", f"--verbose={verbose}",
                              f"--backend={keras.backend.backend()}", f"--logdir={logdir}"])
    assert outcome.code == 1, outcome.traceback or outcome.stderr[-3000:]
    assert "Traceback (most recent call last)" in outcome.stderr and "in update" in outcome.stderr
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped by the ValueError above after 96 steps; the last checkpoint, "
                           f"{logdir / 'model' / 'latest'}, is intact: --resume continues"), outcome.stderr[-3000:]
    assert json.loads((logdir / "model" / "latest" / "ppo.json").read_text())["num_updates"] == 2
    assert "Incompatible shapes" in (logdir / "training.log").read_text()


@pytest.mark.backend_independent  # the flags are checked before Keras starts
def test_verbose_2_shows_the_traceback_of_a_one_line_error(tmp_path, run_runner):
    quiet = run_runner("--env_id=CartPole-v1", "--num_envs=0", f"--logdir={tmp_path}/a")
    loud = run_runner("--env_id=CartPole-v1", "--num_envs=0", "--verbose=2", f"--logdir={tmp_path}/b")
    for proc in (quiet, loud):
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: num_envs"), \
            proc.stderr[-3000:]
    assert "Traceback" not in quiet.stderr and "Traceback (most recent call last)" in loud.stderr


@pytest.mark.backend_independent  # which flags win is settled before Keras starts
def test_bundled_env_flagfile_applies_and_explicit_flags_win(tmp_path, run_runner):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("--num_epochs=1\n")
    proc = run_runner("--env_id=CartPole-v1", "--num_envs=2", "--batch_size=32", "--num_episodes=1",
                      "--eval_episodes=1", "--verbose=0", f"--flagfile={flagfile}", f"--logdir={tmp_path}/run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags = json.loads((tmp_path / "run" / "model" / "latest" / "ppo.json").read_text())["run"]["flags"]
    assert flags["num_steps"] == 32 and flags["lr"] == 1e-3 and flags["gae_lambda"] == 0.8  # CartPole-v1.flags
    assert flags["num_envs"] == 2 and flags["num_epochs"] == 1  # the command line and --flagfile win
    # From Python, unstable_ppo.bundled.bundled_settings gives the same settings.
    from unstable_ppo.bundled import bundled_settings

    saved = json.loads((tmp_path / "run" / "model" / "latest" / "ppo.json").read_text())["hyperparameters"]
    bundled = bundled_settings("CartPole-v1")
    assert bundled.total_timesteps == 100_000 and bundled.hyperparameters["num_steps"] == 32
    for name, value in bundled.hyperparameters.items():
        if name not in ("num_envs", "num_epochs"):
            assert saved[name] == (list(value) if isinstance(value, tuple) else value), name
    proc = run_runner("--env_id=CartPole-v1", "--num_envs=2", "--batch_size=32", "--num_episodes=1",
                      "--eval_episodes=1", "--verbose=0", "--noenv_defaults", f"--logdir={tmp_path}/plain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags = json.loads((tmp_path / "plain" / "model" / "latest" / "ppo.json").read_text())["run"]["flags"]
    assert flags["num_steps"] == 128 and flags["lr"] == 2.5e-4


@pytest.mark.quick
@pytest.mark.backend_independent  # the flags are checked before Keras starts
def test_every_bundled_flagfile_gives_ppo_settings_from_python():
    import dataclasses

    from unstable_ppo.bundled import bundled_settings
    from unstable_ppo.config import Hyperparameters

    fields = {f.name for f in dataclasses.fields(Hyperparameters)}
    for name in sorted(os.listdir(CONFIG_DIR)):
        env_id = "PongNoFrameskip-v4" if name == "atari.flags" else name[:-len(".flags")]
        bundled = bundled_settings(env_id)
        assert bundled.path == os.path.join(CONFIG_DIR, name) and bundled.total_timesteps > 0, env_id
        assert bundled.hyperparameters and set(bundled.hyperparameters) <= fields, env_id
        Hyperparameters(**bundled.hyperparameters).check_values()
    with pytest.raises(ValueError, match="no bundled settings for 'Foo-v0': .* CartPole-v1, "):
        bundled_settings("Foo-v0")


@pytest.mark.backend_independent  # the flags are checked before Keras starts
def test_every_bundled_flagfile_names_real_flags():
    from absl import flags as absl_flags

    import unstable_ppo.run as runner

    names = {f.name for f in absl_flags.FLAGS.get_flags_for_module(runner)}
    configs = os.listdir(runner.CONFIG_DIR)
    assert {"atari.flags", "CartPole-v1.flags", "Pendulum-v1.flags", "HalfCheetah-v5.flags"} <= set(configs)
    for name in configs:
        values = runner.read_flagfile(os.path.join(runner.CONFIG_DIR, name))
        assert values and set(values) <= names, name
    assert runner.env_config_file("BreakoutNoFrameskip-v4").endswith("atari.flags")
    assert runner.env_config_file("ALE/Pong-v5").endswith("atari.flags")
    assert runner.env_config_file("FrozenLake-v1") is None


SETTLE = """
import sys
import gymnasium as gym
from absl import flags
import unstable_ppo.run  # defines the runner's flags
from unstable_ppo.run_settings import RunSettings
flags.FLAGS(["run", "--env_id=" + sys.argv[1], "--logdir=" + sys.argv[2]])
settings = RunSettings(flags.FLAGS)
settings.settle()
try:
    env = gym.make(sys.argv[1])
except gym.error.DependencyNotInstalled as e:  # Box2D or MuJoCo not installed: the values are checked
    print("no env:", e)
else:
    settings.hp.check_spaces(env.observation_space, env.action_space)
print(settings.config_file, settings.total)
"""


@pytest.mark.backend_independent  # the flags are checked before Keras starts
@pytest.mark.parametrize("config", sorted(n for n in os.listdir(CONFIG_DIR) if n != "atari.flags"))
def test_every_bundled_flagfile_settles_into_valid_settings(tmp_path, config):
    """Each env's flagfile passes the runner's own checks, and its options fit the env's spaces."""
    env_id = config[: -len(".flags")]
    proc = subprocess.run([sys.executable, "-c", SETTLE, env_id, str(tmp_path / "run")], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(os.path.join(CONFIG_DIR, config))


@pytest.mark.backend_independent  # the video is the env's; play runs on every backend in the tests above
def test_play_best_and_record_video(tmp_path, run_runner):
    logdir = tmp_path / "run"
    proc = run_runner(*SHORT, "--num_episodes=2", "--eval_interval=1", f"--logdir={logdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = child_env()
    play = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={logdir / 'model'}", "--best",
                           "--episodes=2", "--record_video", "--max_steps=50"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert play.returncode == 0, play.stderr[-3000:]
    assert play.stdout.strip().splitlines()[-1].endswith("episodes=2")
    videos = [n for n in os.listdir(logdir / "videos") if n.endswith(".mp4")]
    assert len(videos) == 2 and all(os.path.getsize(logdir / "videos" / n) > 0 for n in videos)


def test_top_level_run_py_is_the_same_runner(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--helpshort"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "--num_envs" in proc.stdout and "--total_timesteps" in proc.stdout  # absl exits 1 after help


@pytest.mark.backend_independent  # the flags are checked before Keras starts
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env_id=NoSuchEnv-v0"], "NoSuchEnv"),
        (["--num_envs=0"], "num_envs must be a positive integer"),
        (["--batch_size=100000"], "batch_size 100000 is larger than the rollout"),
        (["--lr=0"], "lr must be > 0"),
        (["--num_episodes=-1"], "num_episodes must be a positive integer"),
        (["--logdir=/tmp/{user}/x"], "unknown template key {user}"),
        (["--logdir=/tmp/{rank:s}/x"], "--logdir: path template '/tmp/{rank:s}/x' formats {rank}"),
        (["--monitor_dir=m{env_id!x}"], "--monitor_dir: path template 'm{env_id!x}' formats {env_id}"),
        (["--resume"], "no checkpoint to resume"),
        (["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
        (["--num_envs=abc"], "--num_envs=abc"),
        (["--resume", "--overwrite"], "contradict"),
        (["--vec_env=ale"], "needs an Atari env id"),
        (["--eval_interval=-1"], "eval_interval must be >= 0"),
        (["--hidden_sizes=64,x"], "--hidden_sizes must be comma-separated integers"),
        (["--activation=bogus"], "unknown activation 'bogus'"),
        (["--eval_max_steps=0"], "eval_max_steps must be a positive integer"),
        (["--recurrent", "--num_steps=32", "--timestep_size=24"], "timestep_size 24 does not divide num_steps 32"),
        (["--recurrent", "--batch_size=40", "--timestep_size=16"], "batch_size 40 is not a multiple of timestep_size"),
        (["--recurrent", "--noshared_net"], "a shared LSTM needs a shared torso"),
        (["--recurrent", "--hidden_layer_size=0"], "hidden_layer_size must be a positive integer"),
        (["--lstm_head_sizes=64"], "lstm_head_sizes applies to recurrent models only"),
        (["--recurrent", "--lstm_head_sizes=64,y"], "--lstm_head_sizes must be comma-separated integers"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, message, run_runner):
    proc = run_runner(*flags, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "log").exists()  # nothing written before the error


def test_play_evaluates_a_saved_model(tmp_path):
    from unstable_ppo import PPO

    PPO("CartPole-v1", seed=0, num_envs=2, num_steps=32, batch_size=32).save(tmp_path / "m")
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path / 'm'}",
                           "--episodes=3", "--seed=1"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [l.split(":")[0] for l in lines[:3]] == ["episode 1", "episode 2", "episode 3"]
    assert lines[-1].startswith("mean_return=") and lines[-1].endswith("episodes=3")


@pytest.mark.backend_independent  # refused before Keras loads anything
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_play_on_a_bad_model_dir_is_a_one_line_error(tmp_path, damage):
    if damage == "corrupt":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.keras").write_bytes(b"junk")
        (tmp_path / "m" / "ppo.json").write_text("{}")
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={tmp_path / 'm'}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_recurrent_run_on_a_memory_task_trains_resumes_and_plays(tmp_path, run_runner):
    backend = keras.backend.backend()
    logdir = tmp_path / "novel"
    common = ("--env_id=CartPoleNoVel-v1", "--num_envs=2", "--num_steps=16", "--batch_size=16", "--num_epochs=1",
              "--eval_episodes=2", "--verbose=0", f"--backend={backend}", f"--logdir={logdir}")
    proc = run_runner(*common, "--recurrent", "--timestep_size=8", "--hidden_layer_size=16", "--num_episodes=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((logdir / "model" / "latest" / "ppo.json").read_text())
    assert saved["hyperparameters"]["recurrent"] and saved["hyperparameters"]["timestep_size"] == 8
    assert saved["observation_space"]["shape"] == [2]
    # A resumed run keeps its policy kind: --norecurrent is refused before anything is written.
    proc = run_runner(*common, "--resume", "--norecurrent", "--num_episodes=3")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --recurrent="), \
        proc.stderr[-2000:]
    proc = run_runner(*common, "--resume", "--num_episodes=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((logdir / "metrics.json").read_text())["total_timesteps"] == 96
    env = child_env()
    play = subprocess.run([sys.executable, "-m", "unstable_ppo.play", f"--model_dir={logdir / 'model'}",
                           "--episodes=2"], env=env, capture_output=True, text=True, timeout=300)
    assert play.returncode == 0, play.stderr[-3000:]
    assert play.stdout.strip().splitlines()[-1].endswith("episodes=2")


def test_a_missing_env_extra_is_named(tmp_path, run_runner):
    """An env whose Box2D/MuJoCo is missing: one line naming this package's extra."""
    import gymnasium as gym

    from unstable_ppo.envs import make_env

    with pytest.raises(gym.error.DependencyNotInstalled, match=r'needs the box2d extra: pip install -e "\.\[box2d\]"'):
        make_env("tests.helpers.envs:NeedsBox2D-v0")
    proc = run_runner("--env_id=tests.helpers.envs:NeedsBox2D-v0", f"--logdir={tmp_path}/run", cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'error: tests.helpers.envs:NeedsBox2D-v0 needs the box2d extra: pip install -e ".[box2d]" (gymnasium says: Box2D')


@pytest.mark.backend_independent  # the flags are checked before Keras starts
@pytest.mark.parametrize("line, message", [
    ("--bogus=3", "Unknown command line flag 'bogus'"),
    ("--num_envs=x", "flag --num_envs=x: invalid literal"),
    ("--normalize_obs=maybe", "flag --normalize_obs=maybe: ('Non-boolean argument"),
])
def test_a_bad_flagfile_line_is_named_with_its_file_and_line(tmp_path, run_runner, line, message):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text(f"# my settings\n--num_epochs=1\n{line}\n")
    proc = run_runner(f"--flagfile={flagfile}", f"--logdir={tmp_path}/run")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {flagfile}:3: {message}")


@pytest.mark.backend_independent  # the flags are checked before Keras starts
def test_a_bad_bundled_flagfile_line_is_named_with_its_file_and_line(tmp_path):
    from absl import flags as absl_flags

    from unstable_ppo.cli import UsageError
    from unstable_ppo.run_settings import apply_defaults, read_flagfile

    values = absl_flags.FlagValues()
    absl_flags.DEFINE_integer("num_envs", 1, "", flag_values=values)
    values(["run"])
    for text, message in [("--num_envs=2\n--bogus=1\n", "sets an unknown flag --bogus"),
                          ("# x\n--num_envs=x\n", "bad value for --num_envs")]:
        path = tmp_path / "Env-v0.flags"
        path.write_text(text)
        with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:2:? .*{re.escape(message)}") as error:
            apply_defaults(values, read_flagfile(str(path)), str(path))
        assert "\n" not in str(error.value)
