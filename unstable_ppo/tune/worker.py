"""A worker: runs trials, one at a time, while the study needs more; each trial is a runner run (a
`TrainingRun`, in this process) that reports its evaluations to the trial and stops when the pruner says so."""

import os
import sys
import time

from unstable_ppo.callbacks import Callback
from unstable_ppo.cli import UsageError
from unstable_ppo.faults import EnvFailure, NonFiniteError
from unstable_ppo.run_settings import RunSettings
from unstable_ppo.training_run import RunFailed, TrainingRun
from unstable_ppo.tune import space as tune_space
from unstable_ppo.tune.report import params_text
from unstable_ppo.tune.settings import fresh_runner_flags
from unstable_ppo.tune.storage import ClaimLock, open_storage
from unstable_ppo.tune.study import fail_abandoned_trials, open_worker_study, process_identity, trial_counts


class TrialFailed(RuntimeError):
    """The trial's run failed (its envs, a save): the trial is FAIL and the worker goes on."""


class _ReportEvaluations(Callback):
    """After each of a trial run's evaluations: report it to the trial; stop the run when the pruner says so."""

    def __init__(self, run):
        self.run = run

    def on_update_end(self, update, logs):
        run, ppo = self.run, self.ppo
        if "eval_mean_reward" not in logs:
            return
        step, value = len(run.evaluator.evaluations), float(logs["eval_mean_reward"])
        run.trial.report(value, step)
        if ppo.num_timesteps < run.settings.total and run.trial.should_prune():
            run.pruned_at = (step, ppo.num_timesteps, value)
            run.log.info("pruned at evaluation %d (%d steps): mean_return=%.2f", step, ppo.num_timesteps, value)
            ppo.stop_training = True


def _trial_run_class():
    class TrialRun(TrainingRun):
        """A runner run that reports each evaluation to the trial, and stops when the pruner says so."""

        def __init__(self, settings, trial):
            super().__init__(settings)
            self.trial, self.pruned_at = trial, None

        def callbacks(self):
            evaluator, *rest = super().callbacks()
            return [evaluator, _ReportEvaluations(self), *rest]

        def close(self):
            for env in (getattr(self, "eval_env", None), getattr(getattr(self, "ppo", None), "env", None)):
                if env is not None:
                    try:
                        env.close()
                    except Exception:
                        pass
            gatherer = getattr(getattr(self, "ppo", None), "gatherer", None)
            if gatherer is not None:
                gatherer.close()

    return TrialRun


class Worker:
    """Runs trials, one at a time, while the study needs more."""

    def __init__(self, tuner, index):
        self.tuner, self.index = tuner, index
        self.prefix = f"[worker {index}] " if tuner.flags.n_jobs > 1 else ""

    def log(self, line):
        if self.tuner.flags.verbose:
            print(f"{self.prefix}{line}", flush=True)

    def run(self):
        import optuna  # late: the tune extra is optional

        tuner = self.tuner
        storage = open_storage(tuner.storage_url)
        study = open_worker_study(tuner, storage, self.index)
        self.lock = ClaimLock(storage, study.study_name)
        failures = 0
        try:
            while True:
                self.lock.acquire()
                try:
                    fail_abandoned_trials(study, storage, self.log)
                    done, running = trial_counts(storage, study)
                    if done + running >= tuner.flags.n_trials:
                        return 0
                    self.outcome = None
                    study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
                finally:
                    self.lock.release()
                failures = failures + 1 if self.outcome == "FAIL" else 0
                if failures >= 3:
                    self.log("3 trials failed in a row: this worker stops (their errors are in the trials' "
                             "training.log and user attributes)")
                    return 1
        finally:
            self.lock.close()

    def objective(self, trial):
        import optuna  # late: the tune extra is optional

        self.lock.release()  # the trial exists (RUNNING): other workers count it from now on
        start = time.perf_counter()
        trial.set_user_attr("worker", process_identity())
        values = tune_space.suggest(trial, self.tuner.space)
        arguments, reason = self.tuner.trial_arguments(trial.number, values)
        logdir = os.path.join(self.tuner.study_dir, f"trial_{trial.number}")
        trial.set_user_attr("flags", arguments)
        trial.set_user_attr("logdir", logdir)
        try:
            if reason is None:
                value = self._train(trial, arguments, logdir)
                self._report(trial, "COMPLETE", f"mean_return={value:.2f}", start)
                return value
        except optuna.TrialPruned as e:
            reason = str(e)
        except TrialFailed as e:
            trial.set_user_attr("failed", str(e))
            self.outcome = "FAIL"
            self._report(trial, "FAIL", str(e), start)
            raise
        trial.set_user_attr("pruned", reason)
        self._report(trial, "PRUNED", reason, start)
        raise optuna.TrialPruned(reason)

    def _report(self, trial, state, what, start):
        self.outcome = state
        self.log(f"trial {trial.number}: {state} {what} ({time.perf_counter() - start:.0f} s) "
                 f"| {params_text(trial.params)}")

    def _train(self, trial, arguments, logdir):
        import optuna  # late: the tune extra is optional

        try:
            settings = RunSettings(fresh_runner_flags([*arguments, f"--logdir={logdir}", "--overwrite",
                                                       "--verbose=0"]))
            settings.settle()
        except UsageError as e:
            raise optuna.TrialPruned(f"the runner refuses these settings: {e}") from None
        run = _trial_run_class()(settings, trial)
        try:
            try:
                run.build()
            except (ValueError, UsageError) as e:
                raise optuna.TrialPruned(f"the runner refuses these settings: {str(e).splitlines()[0]}") from None
            try:
                run.train()
            except RunFailed as e:
                if isinstance(e.__cause__, NonFiniteError):
                    raise optuna.TrialPruned(f"training diverged: {str(e).splitlines()[0]}") from None
                raise TrialFailed(str(e).splitlines()[0]) from None
            if run.pruned_at:
                step, steps, value = run.pruned_at
                raise optuna.TrialPruned(f"at evaluation {step} ({steps} steps): mean_return={value:.2f} is below "
                                         f"the median")
            try:
                metrics = run.final_report()
            except EnvFailure as e:
                raise TrialFailed(f"final evaluation: {e}") from None
            trial.set_user_attr("best_mean_return", metrics["best"]["mean_return"])
            trial.set_user_attr("wall_time_s", metrics["wall_time_s"])
            trial.set_user_attr("steps_per_second", metrics["steps_per_second"])
            return float(metrics["latest"]["mean_return"])
        finally:
            run.close()
            log = getattr(run, "log", None)
            for handler in list(log.handlers if log else []):
                handler.close()
                log.removeHandler(handler)
            if "keras" in sys.modules:
                sys.modules["keras"].backend.clear_session()
