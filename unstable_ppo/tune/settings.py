"""The tuner's settings, settled and checked before Optuna's storage or Keras: the study's place, the runner
flags every trial starts from, the search space and the budget; and each trial's runner flags."""

import copy
import math
import os

from absl import flags

from unstable_ppo import run as runner  # noqa: F401 - defines the runner's flags, on this FLAGS (no Keras)
from unstable_ppo import config
from unstable_ppo.cli import UsageError
from unstable_ppo.run_settings import MAX_SEED, RunSettings, render_path
from unstable_ppo.tune import space as tune_space

FLAGS = flags.FLAGS

# Runner flags that say where and how a trial runs: set by the tuner, never taken from the base.
_TUNER_FLAGS = {"logdir", "resume", "overwrite", "total_timesteps", "num_episodes", "eval_interval", "verbose",
                "seed", "backend", "rank", "env_id", "flagfile"}
_REFUSED = {"logdir": "trials run in {study_dir}/trial_N: set --study_dir",
            "resume": "a study resumes by itself: run the same command again",
            "overwrite": "each trial has its own run directory",
            "num_episodes": "use --budget (env steps per trial)"}


def _runner_module():
    """The module that defines the runner's flags on FLAGS: `unstable_ppo.run`."""
    return FLAGS.find_module_defining_flag("lr")


def runner_flag_names():
    return {f.name for f in FLAGS.get_flags_for_module(_runner_module())}


def fresh_runner_flags(argv):
    """A FlagValues of the runner's flags alone, as defined (unparsed), parsed from `argv` alone.

    A new FlagValues of its own flags: nothing else (FLAGS, another trial) shares them. Each flag is a copy of
    the runner's, reset to its default (absl's flags are copied only deeply), under the runner's module, so
    that `run_settings.run_flags` finds them as on the runner's command line.
    """
    module = _runner_module()
    values = flags.FlagValues()
    for flag in FLAGS.get_flags_for_module(module):
        flag = copy.deepcopy(flag)
        flag.unparse()
        flags.DEFINE_flag(flag, values, module_name=module)
    try:
        values(["unstable_ppo.run", *argv])
    except flags.Error as e:
        raise UsageError(str(e)) from None
    return values


class Tuner:
    """The study's settings, checked: its place, base flags, search space and budget."""

    def __init__(self, f):
        self.flags = f
        for name in ("n_trials", "n_jobs", "n_evaluations", "top"):
            if f[name].value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {f[name].value}")
        if f.n_startup_trials < 0:
            raise UsageError(f"n_startup_trials must be >= 0, got {f.n_startup_trials}")
        for name, why in _REFUSED.items():
            if f[name].present:
                raise UsageError(f"--{name} does not apply to tuning: {why}")
        if not f.study_name.strip():
            raise UsageError("--study_name must not be empty")
        self.env_id = f.env_id
        self.study_dir = os.path.abspath(render_path(f.study_dir, "study_dir", env_id=f.env_id, rank=f.rank,
                                                     study_name=f.study_name))
        self.storage_url = f.storage or f"sqlite:///{os.path.join(self.study_dir, 'study.db')}"
        self.base_seed = f.seed if f.seed is not None else 1
        names = runner_flag_names()
        # The runner's flags given here (by --flagfile too), as the runner would read them: (name, argument).
        self.base_flags = [("env_id", f"--env_id={f.env_id}")] + [
            (name, f[name].serialize()) for name in sorted(names - _TUNER_FLAGS) if f[name].present]
        self.base = [argument for _, argument in self.base_flags]
        self.budget = f.budget
        self.space = None
        if f.report:
            return
        if f.budget is None:
            raise UsageError("--budget (env steps per trial) is required")
        if f.budget <= 0:
            raise UsageError(f"budget must be a positive integer, got {f.budget}")
        if not 0 <= self.base_seed <= MAX_SEED - 100_000:
            raise UsageError(f"seed must be in [0, {MAX_SEED - 100_000}] (trial N runs with seed + N), got {f.seed}")
        self.space = tune_space.load_space(f.search_space)
        self.base_settings = self._settle(self.base, os.path.join(self.study_dir, ".base-check"))
        self._check_space()
        self._check_budget()

    def _settle(self, arguments, logdir):
        """`RunSettings` of a run with these flags (settled and checked, nothing written)."""
        values = fresh_runner_flags([*arguments, f"--total_timesteps={self.budget}", f"--logdir={logdir}",
                                     "--verbose=0"])
        settings = RunSettings(values)
        settings.settle()
        return settings

    def _check_space(self):
        """Every range end and choice, set in the base settings, passes the runner's checks (but the batch
        size, which a trial cuts to the rollout)."""
        base = self.base_settings.flags
        for name, param in self.space.items():
            for value in param.extremes():
                values = copy.deepcopy(base)
                try:
                    values[name].parse(value if isinstance(value, bool) else str(value))
                    hp = config.Hyperparameters(**RunSettings(values).hyperparameters())
                    hp.batch_size = min(hp.batch_size, hp.num_envs * hp.num_steps)
                    hp.check_values()
                except (flags.Error, ValueError) as e:
                    raise UsageError(f"search space: {name}={value!r}: {str(e).splitlines()[0]}") from None

    def _values(self, name):
        """The values the space can give a flag (the base's when it is not searched)."""
        param = self.space.get(name)
        if param is None:
            return [self.base_settings.flags[name].value]
        if param.kind in ("int", "float"):
            return [param.low]
        return [int(v) for v in param.extremes()]

    def _check_budget(self):
        num_envs, num_steps = min(self._values("num_envs")), min(self._values("num_steps"))
        if self.budget < num_envs * num_steps:
            raise UsageError(f"--budget={self.budget} is smaller than one rollout (num_envs x num_steps = "
                             f"{num_envs} x {num_steps} = {num_envs * num_steps} steps)")

    def trial_arguments(self, number, values):
        """The runner flags of trial `number` with the sampled `values`, and a note (or None: the trial is valid).

        Returns (arguments, pruned_reason).
        """
        base = self.base_settings.flags
        get = lambda name: values.get(name, base[name].value)  # noqa: E731
        tuned = dict(values)
        rollout = int(get("num_envs")) * int(get("num_steps"))
        if int(get("batch_size")) > rollout:
            tuned["batch_size"] = rollout  # as the Zoo cuts batch_size to n_steps
        arguments = [argument for name, argument in self.base_flags if name not in tuned] + [
            tune_space.flag_argument(base[name], value) for name, value in tuned.items()]
        if rollout > self.budget:
            return arguments, f"one rollout (num_envs x num_steps = {rollout} steps) is more than the budget"
        updates = math.ceil(self.budget / rollout)
        arguments += [f"--seed={self.base_seed + number}", f"--total_timesteps={self.budget}",
                      f"--eval_interval={max(1, updates // self.flags.n_evaluations)}"]
        return arguments, None
