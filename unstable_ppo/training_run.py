"""One training run from settled flags: build the envs and PPO, train with logging,
evaluation and checkpoints between updates, report, and stop cleanly on a signal.

`unstable_ppo.run` settles and checks the flags first (`RunSettings`); a `TrainingRun`
is where files get written. Keras is imported only when the PPO is built, after the
last check that needs no Keras: the `unstable_ppo.ppo` and `keras` imports below are
inside the methods on purpose.
"""

import json
import logging
import os
import shutil
import signal
import sys
import time

from tqdm.auto import tqdm

from unstable_ppo import evaluation
from unstable_ppo.callbacks import Callback, CheckpointCallback, EvalCallback, TensorBoard, summary_line
from unstable_ppo.checkpoint import (
    BEST,
    LATEST,
    CheckpointError,
    has_checkpoint,
    write_json_atomically,
)
from unstable_ppo.cli import UsageError
from unstable_ppo.envs import make_vec_env
from unstable_ppo.faults import EnvFailure, NonFiniteError
from unstable_ppo.envs.monitor import monitor_episodes, rewind_monitor_files
from unstable_ppo.summaries import rewind_tensorboard
from unstable_ppo.ray_gather import RayGatherer
from unstable_ppo.run_settings import RunSettings, check_writable, run_flags


class Interrupted(Exception):
    """The run was asked to stop by a signal, and saved a checkpoint first.

    `exit_code` is the shell's convention for a process a signal stopped: 128 + its number
    (130 for SIGINT, 143 for SIGTERM), which schedulers such as SLURM read as a preemption.
    """

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class Crashed(RuntimeError):
    """An exception once training had started (a bug, say in a user's encoder): unlike bad input,
    its traceback matters. The message says which checkpoint is intact and how to go on."""


class RunFailed(RuntimeError):
    """The run cannot go on (envs keep failing, NaN, a failed save): exit 1 with one line."""


class TrainingRun:
    """One training run: its envs, PPO, loggers and checkpoints, from flags already settled."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self.flags = settings.flags
        self.paths = settings.paths

    def build(self) -> None:
        """The evaluation envs, the PPO (new, or loaded with --resume) and its training envs."""
        f, hp, paths, settings = self.flags, self.settings.hp, self.paths, self.settings
        # The evaluation envs write no files: they tell the spaces before the training envs exist.
        options = hp.env_options()
        self.eval_env = make_vec_env(f.env_id, min(f.eval_episodes, f.num_envs), f.vec_env, options, training=False,
                                     max_episode_steps=f.eval_max_steps, max_env_restarts=f.max_env_restarts,
                                     env_timeout=f.env_timeout)
        try:
            hp.check_spaces(self.eval_env.single_observation_space, self.eval_env.single_action_space)
            from unstable_ppo.ppo import PPO  # Keras (and TensorFlow) start here, after every other flag check

            hp.check_activation()
            check_writable(paths.logdir)
        except (ValueError, UsageError):
            self.eval_env.close()
            raise
        if f.resume:  # a damaged checkpoint is reported before any env or file is made
            try:
                self.ppo = PPO.load(os.path.join(paths.model_root, LATEST))
                if f["recurrent"].present and f.recurrent != self.ppo.recurrent:
                    raise UsageError(f"--{'' if f.recurrent else 'no'}recurrent: the checkpoint in "
                                     f"{os.path.join(paths.model_root, LATEST)} holds a "
                                     f"{'non-' if f.recurrent else ''}recurrent model")
            except (ValueError, FileNotFoundError, UsageError):
                self.eval_env.close()
                raise
        if f.resume and settings.saved.get("monitor_episodes"):  # the episodes after the checkpoint go
            rewind_monitor_files(paths.monitor_dir, settings.saved["monitor_episodes"])
        env_files = dict(options=options, monitor_dir=paths.monitor_dir, training=True, monitor_append=f.resume,
                         max_env_restarts=f.max_env_restarts, env_timeout=f.env_timeout)
        if settings.ray_address:  # the actors step the envs and write the Monitor files; these only tell the spaces
            env = make_vec_env(f.env_id, f.num_envs, "sync", options, training=True)
        else:
            env = make_vec_env(f.env_id, f.num_envs, f.vec_env, gather_per_worker=f.gather_per_worker, **env_files)
        if f.resume:
            self.ppo.hp.gather_per_worker, self.ppo.hp.worker_num = f.gather_per_worker, f.worker_num
            self.ppo.set_env(env)
        else:
            if f.overwrite:
                self._clear_previous_run()
            self.ppo = PPO(env, seed=f.seed, encoder=settings.make_encoder(), **settings.hyperparameters())
        self.ppo.env_id = f.env_id  # as given: a "module:EnvId" id keeps its module, so play can rebuild the env
        rollout = f.num_envs * f.num_steps
        self.evaluator = _RunEvaluation(self, eval_env=self.eval_env, eval_freq=f.eval_interval * rollout,
                                        n_eval_episodes=f.eval_episodes, best_model_save_path=paths.model_root,
                                        deterministic=f.eval_deterministic, seed=f.eval_seed, verbose=0)
        if f.resume:
            best = settings.saved.get("best_mean_return")
            self.evaluator.best_mean_reward = float("-inf") if best is None else best
            self.evaluator.evaluations = list(settings.saved.get("evaluations", []))
        self.checkpointer = _RunCheckpoint(self, save_freq=f.save_interval * rollout, save_path=paths.model_root,
                                           latest_only=True)
        if settings.ray_address:
            self.ppo.gatherer = RayGatherer(self.ppo, f.env_id, f.gather_per_worker, seed=f.seed,
                                            make_kwargs=env_files, max_restarts=f.max_env_restarts)

    def _clear_previous_run(self):
        """--overwrite: the previous run's checkpoints, Monitor files and metrics go (its logs stay)."""
        for path in (self.paths.model_root, self.paths.monitor_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (os.path.join(self.paths.logdir, "metrics.json"),):
            if os.path.exists(path):
                os.remove(path)

    def run_info(self) -> dict:
        """The runner's record saved in every checkpoint's ppo.json: what --resume reads back."""
        return {
            "flags": run_flags(self.flags),
            "config_file": self.settings.config_file,
            "best_mean_return": (self.evaluator.best_mean_reward
                                 if self.evaluator.best_mean_reward != float("-inf") else None),
            "evaluations": self.evaluator.evaluations,
            # The Monitor CSVs' episodes so far: a resume from this checkpoint cuts them back to these.
            "monitor_episodes": monitor_episodes(self.paths.monitor_dir),
        }

    def train(self) -> None:
        """`learn` to the settled number of steps; a stop request or a failure saves what can be kept."""
        f, ppo, model_root = self.flags, self.ppo, self.paths.model_root
        log = self.log = _file_logger(self.paths.log_file)
        log.info("%s run: flags %s", "resumed" if f.resume else "new", json.dumps(run_flags(f)))
        if self.settings.config_file:
            log.info("env defaults from %s", self.settings.config_file)
        if ppo.gatherer is not None:
            for line in ppo.gatherer.describe():
                log.info("%s", line)
        if f.resume:  # the scalars logged after the checkpoint (a killed run's) go: those steps are trained again
            rewind_tensorboard(self.paths.tb_dir, ppo.num_timesteps)
        self.tensorboard = TensorBoard(self.paths.tb_dir)
        self.stop = _StopRequests()
        self.start = time.perf_counter()
        self.steps_before = ppo.num_timesteps
        library_log = logging.getLogger("unstable_ppo")  # env restarts and the like, into training.log too
        library_log.addHandler(log.handlers[0])
        callbacks = self.callbacks()
        try:
            with self.stop:
                try:
                    ppo.learn(self.settings.total, callbacks=callbacks,
                              progress_bar=f.verbose == 1 and _on_a_terminal(), reset_num_timesteps=not f.resume)
                except EnvFailure as e:  # the model is sound: keep it
                    self.checkpointer.save()
                    raise RunFailed(f"{e}; checkpoint saved to {os.path.join(model_root, LATEST)} "
                                    f"after {ppo.num_timesteps} steps, --resume continues the run") from e
                except NonFiniteError as e:  # the model may be garbage: keep the last good checkpoint
                    kept = (f"the last good checkpoint is kept in {os.path.join(model_root, LATEST)}"
                            if has_checkpoint(model_root) else "no checkpoint had been saved yet")
                    raise RunFailed(f"{e}: the run stopped; {kept}") from e
                except (CheckpointError, RunFailed, Interrupted, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 - reported with its traceback by run.train
                    if has_checkpoint(model_root):
                        kept = (f"the last checkpoint, {os.path.join(model_root, LATEST)}, is intact: --resume "
                                f"continues from it once the cause is fixed")
                    else:
                        kept = "no checkpoint had been saved yet"
                    log.info("error: %s: %s (after %d steps)", type(e).__name__, e, ppo.num_timesteps)
                    raise Crashed(f"training stopped by the {type(e).__name__} above after {ppo.num_timesteps} "
                                  f"steps; {kept}") from e
            if self.stop.requested:
                self.checkpointer.save()
                message = (f"stopped by {self.stop.requested} after {ppo.num_timesteps} steps: checkpoint saved to "
                           f"{os.path.join(model_root, LATEST)}; --resume continues the run")
                log.info(message)
                raise Interrupted(message, signal.Signals[self.stop.requested])
            self.checkpointer.save()
        except (RunFailed, CheckpointError) as e:
            log.info("error: %s", e)
            raise RunFailed(str(e)) from e
        finally:
            library_log.removeHandler(log.handlers[0])
            self.tensorboard.close()

    def callbacks(self) -> list:
        """`learn`'s callbacks: evaluation, the latest checkpoint, the log, TensorBoard (a subclass adds its own)."""
        return [self.evaluator, self.checkpointer, _RunLog(self), self.tensorboard]

    def final_report(self) -> dict:
        """Reload latest and best from disk, evaluate both, print the table, write metrics.json."""
        import keras  # already imported by build()

        from unstable_ppo.ppo import PPO  # likewise

        f, paths = self.flags, self.paths
        results = {}
        for name in (LATEST, BEST):
            model = PPO.load(paths.model_root, best=name == BEST)
            video_dir = paths.video_dir if f.record_video and name == BEST else None
            if video_dir:
                evaluation.record_video(model, f.env_id, video_dir, f.eval_max_steps, seed=f.eval_seed,
                                        deterministic=f.eval_deterministic)
            results[name] = model.evaluate(self.eval_env, f.eval_episodes, deterministic=f.eval_deterministic,
                                           seed=f.eval_seed)
        self.eval_env.close()
        self.ppo.env.close()
        if self.ppo.gatherer is not None:
            self.ppo.gatherer.close()
        metrics = {
            "env_id": f.env_id,
            "backend": keras.backend.backend(),
            "total_timesteps": self.ppo.num_timesteps,
            "num_updates": self.ppo.num_updates,
            "wall_time_s": round(self.wall, 2),
            "steps_per_second": round(self.steps_this_session / self.wall, 1),
            "eval_episodes": f.eval_episodes,
            "eval_deterministic": f.eval_deterministic,
            # all evaluations: those during training are inside wall_time_s, the final one comes after it
            "eval_wall_time_s": round(self.evaluator.evaluation_time, 2),
            "latest": {"mean_return": results[LATEST]["mean_return"], "std_return": results[LATEST]["std_return"]},
            "best": {"mean_return": results[BEST]["mean_return"], "std_return": results[BEST]["std_return"]},
            "model_dir": paths.model_root,
        }
        write_json_atomically(os.path.join(paths.logdir, "metrics.json"), metrics)
        table = [
            f"{f.env_id} on {metrics['backend']}: {metrics['total_timesteps']} steps, "
            f"{self.steps_this_session} in this session in {self.wall:.1f} s "
            f"({metrics['steps_per_second']:.0f} steps/s; evaluations {self.evaluator.evaluation_time:.1f} s of it)",
            f"{'model':<8}{'mean_return':>14}{'std_return':>14}{'episodes':>10}",
        ]
        for name in (LATEST, BEST):
            r = results[name]
            table.append(f"{name:<8}{r['mean_return']:>14.2f}{r['std_return']:>14.2f}{len(r['returns']):>10}")
        table.append(f"checkpoints in {paths.model_root} (latest/, best/); metrics in "
                     f"{os.path.join(paths.logdir, 'metrics.json')}")
        for line in table:
            self.log.info(line)
            if f.verbose:
                print(line)
        return metrics


class _RunRecord:
    """Mixed into the runner's saving callbacks: every checkpoint they write holds the run's record."""

    def __init__(self, run, **kwargs):
        super().__init__(**kwargs)
        self.run = run

    def checkpoint_extra(self):
        return self.run.run_info()


class _RunEvaluation(_RunRecord, EvalCallback):
    """The runner's evaluations: the best model is the run's `best` checkpoint."""

    best_model_name = BEST


class _RunCheckpoint(_RunRecord, CheckpointCallback):
    """The runner's `latest` checkpoint every --save_interval updates (and at the end, on a signal, on env failure)."""


class _RunLog(Callback):
    """The runner's log: a line per update in training.log and, every --log_interval updates, on the
    console; a stop requested by a signal ends training after the update; at the end, the run's wall
    time and a final evaluation (unless the last update was just evaluated)."""

    runs_last = True  # after the evaluation, whose line it logs

    def __init__(self, run):
        self.run = run

    def on_update_end(self, update, logs):
        run, f = self.run, self.run.flags
        lines = [f"update {update}: {summary_line(logs)}"]
        if "eval_mean_reward" in logs:
            lines.append(run.evaluator.last_line)
            run.log.info(run.evaluator.last_line)
        run.log.info(lines[0])
        if f.verbose >= 2 or (f.verbose == 1 and update % f.log_interval == 0):
            for line in lines:
                _console(line)
        if run.stop.requested:
            self.ppo.stop_training = True

    def on_train_end(self, logs):
        run = self.run
        if run.stop.requested:
            return
        run.wall = time.perf_counter() - run.start
        run.steps_this_session = self.ppo.num_timesteps - run.steps_before
        evaluations = run.evaluator.evaluations
        if not evaluations or evaluations[-1][0] != self.ppo.num_timesteps:
            run.evaluator.evaluate(logs)  # the TensorBoard callback, after this one, writes its figures
            run.log.info(run.evaluator.last_line)


class _StopRequests:
    """While active, SIGINT/SIGTERM ask the run to stop after the current update (a second SIGINT forces it)."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: stopping after this update and saving a checkpoint "
              f"(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _file_logger(path):
    """A logger that writes to the run's log file (and nowhere else)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logger = logging.getLogger(f"unstable_ppo.run.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _on_a_terminal():
    """A progress bar redraws itself with carriage returns: on a terminal only. Written to a file
    (nohup, SLURM, CI) it would be one endless line; there --verbose=1 prints a plain summary line
    every --log_interval updates instead."""
    return sys.stderr.isatty()


def _console(line):
    tqdm.write(line)  # prints above a progress bar instead of through it
