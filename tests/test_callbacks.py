"""`learn(callbacks=...)`: the hooks, stopping, and the built-ins (evaluation, checkpoints, TensorBoard, CSV,
early stopping) with Stable-Baselines3's names and file formats.

The callbacks are plain Python around `learn`: the same on every backend (the runner's tests, which are built
on them, run on all three).
"""

import csv
import os

import numpy as np
import pytest

from tests.helpers.settings import SMALL_2X16
from unstable_ppo import PPO
from unstable_ppo.callbacks import (
    Callback,
    CheckpointCallback,
    CSVLogger,
    EvalCallback,
    LambdaCallback,
    StopTrainingOnRewardThreshold,
    TensorBoard,
)

pytestmark = pytest.mark.backend_independent

ROLLOUT = SMALL_2X16["num_envs"] * SMALL_2X16["num_steps"]  # 32 env steps an update


def tiny(**kwargs):
    return PPO("CartPole-v1", seed=0, **SMALL_2X16, **kwargs)


def scalars(tb_dir, tag):
    """(step, value) of every `tag` scalar in the event files of `tb_dir`."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points = []
    for name in sorted(os.listdir(tb_dir)):
        for event in EventFileLoader(os.path.join(tb_dir, name)).Load():
            points += [(event.step, float(tensor_util.make_ndarray(v.tensor))) for v in event.summary.value
                       if v.tag == tag]
    return points


class Recorder(Callback):
    """Notes every hook call; stops training after `stop_after` updates."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def on_train_begin(self, logs):
        self.calls.append(("train_begin", logs["num_timesteps"], logs["total_timesteps"]))

    def on_rollout_end(self, update, logs):
        self.calls.append(("rollout_end", update, logs["num_timesteps"]))

    def on_update_end(self, update, logs):
        assert self.ppo.num_updates == update and logs["num_timesteps"] == self.ppo.num_timesteps
        self.calls.append(("update_end", update, logs["num_timesteps"]))
        if update == self.stop_after:
            self.ppo.stop_training = True

    def on_train_end(self, logs):
        self.calls.append(("train_end",))


def test_hooks_run_in_order_and_a_callback_stops_training_after_its_update():
    ppo, seen = tiny(), Recorder()
    ppo.learn(3 * ROLLOUT, callbacks=[seen])
    assert seen.calls == [("train_begin", 0, 96),
                          ("rollout_end", 1, 32), ("update_end", 1, 32),
                          ("rollout_end", 2, 64), ("update_end", 2, 64),
                          ("rollout_end", 3, 96), ("update_end", 3, 96),
                          ("train_end",)]
    stopper = Recorder(stop_after=2)
    tiny().learn(10 * ROLLOUT, callbacks=[stopper])
    assert stopper.calls[-2:] == [("update_end", 2, 64), ("train_end",)]
    # The flag is reset by the next learn: training goes on.
    ppo.stop_training = True
    ppo.learn(ROLLOUT)
    assert ppo.num_updates == 4


def test_a_function_is_not_a_callback():
    with pytest.raises(TypeError, match="wrap a function in LambdaCallback"):
        tiny().learn(ROLLOUT, callbacks=[lambda update, logs: None])
    with pytest.raises(TypeError, match="callbacks must be a list"):
        tiny().learn(ROLLOUT, callbacks=Recorder())


def test_eval_callback_evaluates_on_schedule_keeps_the_best_and_logs_as_sb3(tmp_path):
    ppo = tiny()
    evals = EvalCallback(eval_freq=2 * ROLLOUT, n_eval_episodes=3, best_model_save_path=tmp_path / "best",
                         log_path=tmp_path / "logs", verbose=0)
    rows = tmp_path / "progress.csv"
    # The CSV logger comes first in the list, yet it records the evaluation: loggers run last.
    ppo.learn(5 * ROLLOUT, callbacks=[CSVLogger(rows), evals])
    assert [e[0] for e in evals.evaluations] == [64, 128]  # at the first update end at or past each multiple
    means = [e[1] for e in evals.evaluations]
    assert evals.best_mean_reward == max(means) and evals.last_mean_reward == means[-1]
    best = PPO.load(tmp_path / "best" / "best_model")  # the model of the best evaluation
    assert best.num_timesteps == [64, 128][int(np.argmax(means))]
    assert evals.last_line.startswith("eval at 128 steps: mean_return=")

    npz = np.load(tmp_path / "logs" / "evaluations.npz", allow_pickle=False)
    assert npz["timesteps"].tolist() == [64, 128]
    assert npz["results"].shape == (2, 3) and npz["ep_lengths"].shape == (2, 3)
    np.testing.assert_allclose(npz["results"].mean(axis=1), means)

    with open(rows, newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["time/total_timesteps"]) for r in table] == [32, 64, 96, 128, 160]
    assert [r["time/iterations"] for r in table] == ["1", "2", "3", "4", "5"]
    assert [r["eval/mean_reward"] != "" for r in table] == [False, True, False, True, False]
    assert float(table[1]["eval/mean_reward"]) == pytest.approx(means[0])
    assert {"train/approx_kl", "train/entropy_loss", "train/value_loss", "train/clip_fraction",
            "train/learning_rate", "time/fps"} <= set(table[0])


def test_eval_callback_defaults_to_the_models_own_env_and_stops_on_a_reward_threshold(tmp_path):
    ppo = tiny()
    stop = StopTrainingOnRewardThreshold(reward_threshold=1.0)  # CartPole: any episode scores >= 1
    evals = EvalCallback(eval_freq=3 * ROLLOUT, n_eval_episodes=2, callback_on_new_best=stop, verbose=0)
    ppo.learn(20 * ROLLOUT, callbacks=[evals])
    assert ppo.num_timesteps == 3 * ROLLOUT and len(evals.evaluations) == 1
    # As a member of the list after the EvalCallback, it reads the same figure.
    ppo = tiny()
    ppo.learn(20 * ROLLOUT, callbacks=[EvalCallback(eval_freq=2 * ROLLOUT, n_eval_episodes=2, verbose=0),
                                       StopTrainingOnRewardThreshold(reward_threshold=1.0)])
    assert ppo.num_timesteps == 2 * ROLLOUT


def test_eval_callback_prints_a_line_per_evaluation(capsys):
    tiny().learn(2 * ROLLOUT, callbacks=[EvalCallback(eval_freq=ROLLOUT, n_eval_episodes=2)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["eval at 32 steps", "eval at 64 steps"]
    assert "(new best)" in lines[0]


@pytest.mark.parametrize("bad, message", [(dict(eval_freq=-1), "eval_freq must be an int >= 0"),
                                          (dict(eval_freq=1.5), "eval_freq must be an int >= 0"),
                                          (dict(n_eval_episodes=0), "n_eval_episodes must be an int > 0")])
def test_eval_callback_refuses_bad_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        EvalCallback(**bad)


def test_checkpoint_callback_saves_loadable_checkpoints_atomically(tmp_path):
    ppo = tiny()
    ppo.learn(4 * ROLLOUT, callbacks=[CheckpointCallback(save_freq=50, save_path=tmp_path / "every"),
                                      CheckpointCallback(save_freq=2 * ROLLOUT, save_path=tmp_path / "last",
                                                         latest_only=True)])
    # Every 50 steps: the updates ending at 64 and 128 steps are the first past 50 and 100.
    names = sorted(n for n in os.listdir(tmp_path / "every") if not n.startswith("."))
    assert names == ["ppo_128_steps", "ppo_64_steps"]
    assert PPO.load(tmp_path / "every" / "ppo_64_steps").num_timesteps == 64
    assert PPO.load(tmp_path / "last").num_timesteps == 128  # a run's model directory: its `latest`
    # Nothing half-written or superseded is left beside them.
    hidden = [n for n in os.listdir(tmp_path / "last") if n.startswith(".")]
    assert len(hidden) == 1 and os.readlink(tmp_path / "last" / "latest") == hidden[0]
    with pytest.raises(ValueError, match="save_freq must be an int >= 0"):
        CheckpointCallback(save_freq=-5, save_path=tmp_path)


def test_tensorboard_log_writes_one_sb3_keyed_run_per_learn(tmp_path):
    ppo = tiny(tensorboard_log=tmp_path)
    ppo.learn(2 * ROLLOUT)
    ppo.learn(3 * ROLLOUT, reset_num_timesteps=False)  # continues the same run to 3 rollouts, as in SB3
    ppo.learn(ROLLOUT, tb_log_name="again")
    assert sorted(os.listdir(tmp_path)) == ["PPO_1", "again_1"]
    assert [s for s, _ in scalars(tmp_path / "PPO_1", "train/approx_kl")] == [32, 64, 96]
    logs = {}
    ppo.learn(ROLLOUT, callbacks=[LambdaCallback(on_update_end=lambda update, l: logs.update(l))])
    assert sorted(os.listdir(tmp_path)) == ["PPO_1", "PPO_2", "again_1"]
    [(step, entropy_loss)] = scalars(tmp_path / "PPO_2", "train/entropy_loss")
    assert step == ppo.num_timesteps and entropy_loss == pytest.approx(-logs["entropy"], rel=1e-6)
    assert scalars(tmp_path / "PPO_2", "time/fps")


def test_tensorboard_callback_records_evaluations_and_closes_its_file(tmp_path):
    board = TensorBoard(tmp_path / "tb")
    tiny().learn(2 * ROLLOUT, callbacks=[board, EvalCallback(eval_freq=2 * ROLLOUT, n_eval_episodes=2, verbose=0)])
    assert [s for s, _ in scalars(tmp_path / "tb", "eval/mean_reward")] == [64]
    assert [s for s, _ in scalars(tmp_path / "tb", "rollout/ep_len_mean")] in ([32, 64], [64])
    assert board._logger is None  # closed at train end


def test_csv_logger_appends_to_a_resumed_runs_file(tmp_path):
    rows = tmp_path / "progress.csv"
    ppo = tiny()
    ppo.learn(2 * ROLLOUT, callbacks=[CSVLogger(rows)])
    ppo.learn(3 * ROLLOUT, callbacks=[CSVLogger(rows, append=True)], reset_num_timesteps=False)
    with open(rows, newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["time/total_timesteps"]) for r in table] == [32, 64, 96]
    ppo.learn(ROLLOUT, callbacks=[CSVLogger(rows)])  # append=False: a new file
    with open(rows, newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_progress_bar_counts_the_steps_of_learn(capsys):
    tiny().learn(3 * ROLLOUT, progress_bar=True)
    err = capsys.readouterr().err
    assert "96/96" in err


def test_verbose_prints_a_summary_per_update(capsys):
    tiny(verbose=1).learn(2 * ROLLOUT)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("num_timesteps")]
    assert [line.split(" | ")[0] for line in lines] == ["num_timesteps 32", "num_timesteps 64"]
