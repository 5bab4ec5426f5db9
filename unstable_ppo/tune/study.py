"""The study: created or loaded (and checked against the call's settings), its sampler and pruner, and its
trials: how many are finished or running, and which RUNNING ones were abandoned by their process."""

import os
import socket
import warnings

import numpy as np

from unstable_ppo.cli import UsageError
from unstable_ppo.tune.storage import safe_url


def study_attributes(tuner):
    """What every call on a study must agree on: its values are comparable only then."""
    return {"env_id": tuner.env_id, "budget": tuner.budget, "n_evaluations": tuner.flags.n_evaluations}


def open_study(tuner, storage, create, sampler=None, pruner=None):
    import optuna  # late: the tune extra is optional

    if create:
        study = optuna.create_study(storage=storage, study_name=tuner.flags.study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=tuner.flags.study_name, storage=storage, sampler=sampler,
                                      pruner=pruner)
        except KeyError:
            raise UsageError(f"no study {tuner.flags.study_name!r} in {safe_url(tuner.storage_url)}") from None
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise UsageError(f"study {tuner.flags.study_name!r} in {safe_url(tuner.storage_url)} is not a "
                         f"maximization: use another --study_name")
    if not tuner.flags.report:
        for key, value in study_attributes(tuner).items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
            elif study.user_attrs[key] != value:
                raise UsageError(f"study {tuner.flags.study_name!r} was made with --{key}={study.user_attrs[key]}, "
                                 f"not {value}: its trials would not compare; use another --study_name")
    return study


def open_worker_study(tuner, storage, index):
    """The study as worker `index` runs it: a TPE sampler (random for the first --n_startup_trials) and a median
    pruner (after the first n_evaluations // 3 evaluations)."""
    import optuna  # late: the tune extra is optional

    probe = open_study(tuner, storage, create=False)
    # Each worker, and each call, samples from its own random stream: never the same startup trials twice.
    seed = int(np.random.SeedSequence([tuner.base_seed, index, len(probe.trials), os.getpid()])
               .generate_state(1)[0] % (2**31))
    sampler = optuna.samplers.TPESampler(n_startup_trials=tuner.flags.n_startup_trials, seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tuner.flags.n_startup_trials,
                                         n_warmup_steps=tuner.flags.n_evaluations // 3)
    return open_study(tuner, storage, create=False, sampler=sampler, pruner=pruner)


# -- which process runs a trial -------------------------------------------------------------------------------

def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid):
    """The process's start time (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def process_identity(pid=None):
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start": _start_time(pid)}


def process_gone(identity):
    """True when the process named by `identity` ran on this machine and is gone; False when it runs or is
    elsewhere (its heartbeat tells then)."""
    if not isinstance(identity, dict) or identity.get("host") != socket.gethostname() or \
            identity.get("boot_id") != _boot_id():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return False
    if identity.get("start") is None:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return _start_time(pid) != identity["start"]


def fail_abandoned_trials(study, storage, log):
    """RUNNING trials whose process on this machine is gone, and those whose heartbeat is stale: FAIL."""
    import optuna  # late: the tune extra is optional
    from optuna.trial import TrialState  # late: the tune extra is optional

    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        identity = trial.user_attrs.get("worker")
        if not process_gone(identity):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failed", f"its worker (pid {identity['pid']}) is gone")
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                log(f"trial {trial.number}: its worker (pid {identity['pid']}) is gone: marked FAIL")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_counts(storage, study):
    from optuna.trial import TrialState  # late: the tune extra is optional

    study_id = storage.get_study_id_from_name(study.study_name)
    done = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    running = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))
    return done, running
