"""Every combination of the runner's flags trains, or exits 2 with one `error:` line and no file written.

Hypothesis draws command lines (tests/helpers/flag_strategies.py) and runs the runner on them
in this process; UNSTABLE_PPO_FLAG_EXAMPLES sets how many (default 25). A few bad
command lines also go through the real `python -m unstable_ppo.run`.
"""

import os
import shutil
import tempfile

import keras
import pytest
from hypothesis import HealthCheck, Phase, given, settings

import unstable_ppo.run  # noqa: F401 - defines the runner's flags

from tests.helpers.flag_strategies import (
    DRAWN_BY_HAND, FLAG_VALUES, LOGROOT, NOT_DRAWN, check_outcome, materialize, run_in_process, run_subprocess,
    runner_argv, snapshot,
)

BACKEND = keras.backend.backend()
EXAMPLES = int(os.environ.get("UNSTABLE_PPO_FLAG_EXAMPLES", "25"))
TINY = ["--env_id=CartPole-v1", "--env_defaults=false", "--num_envs=2", "--num_steps=16", "--batch_size=16",
        "--num_epochs=1", "--num_episodes=1", "--eval_episodes=1", "--verbose=0", f"--backend={BACKEND}"]


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A directory holding a finished tiny CartPole run (made on first use)."""
    made = []

    def get():
        if not made:
            logdir = str(tmp_path_factory.mktemp("existing") / "run")
            outcome = run_in_process([*TINY, f"--logdir={logdir}"])
            assert outcome.code == 0, outcome.traceback or outcome.stderr
            made.append(logdir)
        return made[0]

    return get


def test_every_runner_flag_is_drawn_or_excused():
    """A new flag (a field in unstable_ppo/config.py makes one) must get values in flag_strategies.py."""
    from absl import flags

    from unstable_ppo import config

    runner = {f.name for f in flags.FLAGS.get_flags_for_module(unstable_ppo.run)}
    settings = {config.flag_name(f) for f in config.settings() if config.flag_name(f)}
    assert settings <= runner
    covered = set(FLAG_VALUES) | DRAWN_BY_HAND | set(NOT_DRAWN)
    assert runner - covered == set(), "give these flags valid and invalid values in FLAG_VALUES"
    assert covered - runner == set(), "these are not runner flags any more"


def test_a_tiny_run_in_process_trains_and_leaves_the_flags_as_they_were(existing_run):
    from absl import flags

    defaults = {name: flags.FLAGS[name].default for name in flags.FLAGS}
    logdir = existing_run()
    assert os.path.isfile(os.path.join(logdir, "metrics.json"))
    # --env_defaults applies CartPole-v1.flags with set_default: restored afterwards.
    with tempfile.TemporaryDirectory() as workdir:
        outcome = run_in_process([*TINY, "--env_defaults=true", f"--logdir={workdir}/run"])
        assert outcome.code == 0, outcome.traceback or outcome.stderr
    after = {name: flags.FLAGS[name].default for name in defaults}
    assert after == defaults and not flags.FLAGS["num_envs"].present


# No shrinking: every example is a real run, and shrinking one failure can take many minutes.
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=runner_argv(BACKEND))
def test_every_flag_combination_runs_or_is_a_one_line_error(argv, existing_run):
    workdir = tempfile.mkdtemp(prefix="flags_")
    try:
        concrete = materialize(argv, workdir, existing_run)
        before = snapshot(workdir)
        outcome = run_in_process(concrete)
        check_outcome(outcome, concrete, before, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr=inf"], "lr must be"),
        (["--use_kl_loss", "--clip_range=0.1"], "--use_kl_loss replaces the clipped objective"),
        (["--env_id=CartPole-v1", "--eta=0.5"], "eta applies to Box"),
        (["--logdir=@LOGROOT@/run{"], "bad path template"),
    ],
)
def test_the_real_command_line_gives_one_line_and_writes_nothing(tmp_path, flags, message):
    argv = materialize([*TINY, f"--logdir={LOGROOT}/run", *flags], str(tmp_path))
    before = snapshot(tmp_path)
    outcome = run_subprocess(argv, cwd=tmp_path)
    line = check_outcome(outcome, argv, before, str(tmp_path))
    assert message in line, line
