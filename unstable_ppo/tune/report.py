"""The study's report, in its directory: best.flags (the best trial's settings as a flagfile the runner takes),
top_trials.txt (also printed), trials.json, and Optuna's optimization-history and parameter-importance plots."""

import collections
import datetime
import json
import os
import warnings

from unstable_ppo.checkpoint import write_atomically
from unstable_ppo.tune.storage import safe_url


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def params_text(params):
    return " ".join(f"{name}={_short(value)}" for name, value in params.items())


def write_report(tuner, study):
    """best.flags, top_trials.txt, trials.json and the two plots in the study directory; the lines printed."""
    from optuna.trial import TrialState  # late: the tune extra is optional

    os.makedirs(tuner.study_dir, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = collections.Counter(t.state.name for t in trials)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value, reverse=True)
    budget = study.user_attrs.get("budget", tuner.budget)
    lines = [f"study {study.study_name!r} ({safe_url(tuner.storage_url)}), {study.user_attrs.get('env_id', '?')}, "
             f"budget {budget} steps a trial: {len(trials)} trials ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    table = [f"{'rank':>4} {'trial':>5} {'mean_return':>12} {'best_eval':>10} {'wall_s':>7}  params"]
    for rank, t in enumerate(complete[:tuner.flags.top], 1):
        best_eval = t.user_attrs.get("best_mean_return")
        best_eval = f"{best_eval:.2f}" if best_eval is not None else "-"
        wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else float("nan")
        table.append(f"{rank:>4} {t.number:>5} {t.value:>12.2f} {best_eval:>10} {wall:>7.0f}  {params_text(t.params)}")
    _write_text(os.path.join(tuner.study_dir, "top_trials.txt"), "\n".join(lines + table) + "\n")
    lines += table if complete else ["no COMPLETE trial yet"]
    _write_trials_json(tuner, study, trials)
    if complete:
        best = complete[0]
        path = os.path.join(tuner.study_dir, "best.flags")
        # Without the tuner's evaluation schedule and this machine's paths: the settings that train.
        flag_lines = [a for a in best.user_attrs.get("flags", [])
                      if not a.startswith(("--eval_interval=", "--compilation_cache_dir=", "--ray_address="))]
        _write_text(path, f"# unstable_ppo.tune: the best trial ({best.number}) of study {study.study_name!r}, final "
                          f"mean return {best.value:.2f} after {budget} steps ({datetime.date.today()}).\n"
                          f"# python -m unstable_ppo.run --flagfile=best.flags  (a later --total_timesteps=N trains "
                          f"longer)\n" + "\n".join(flag_lines) + "\n")
        lines.append(f"best trial {best.number}: mean_return={best.value:.2f}; its flags: {path}")
    lines += _plots(tuner, study, len(complete))
    lines.append(f"report in {tuner.study_dir} (top_trials.txt, trials.json)")
    return lines


def _write_trials_json(tuner, study, trials):
    rows = []
    for t in trials:
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                     "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
                     "user_attrs": {k: v for k, v in t.user_attrs.items() if k != "worker"}})
    _write_text(os.path.join(tuner.study_dir, "trials.json"),
                json.dumps({"study_name": study.study_name, "user_attrs": study.user_attrs, "trials": rows}, indent=1,
                           default=str))


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_atomically(path, write)


def _plots(tuner, study, n_complete):
    import optuna  # late: the tune extra is optional

    try:
        import matplotlib  # late: the tune extra is optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # late: the tune extra is optional
        from optuna.visualization import matplotlib as plots  # late: the tune extra is optional
    except ImportError as e:
        return [f"plots skipped: {e} (pip install matplotlib)"]
    lines = []
    jobs = [("history.png", "optimization history", plots.plot_optimization_history, 1),
            ("importance.png", "parameter importance", plots.plot_param_importances, 2)]
    for name, what, plot, needed in jobs:
        path = os.path.join(tuner.study_dir, name)
        if n_complete < needed:
            lines.append(f"{what} plot skipped: it needs {needed} COMPLETE trial(s), the study has {n_complete}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", bbox_inches="tight", dpi=100))
                plt.close(figure)
            lines.append(f"{what}: {path}")
        except (ImportError, ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError) as e:
            lines.append(f"{what} plot skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return lines
