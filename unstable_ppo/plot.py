"""Learning curves from Monitor CSVs: `python -m unstable_ppo.plot LOGDIR [LOGDIR ...] [--output=curves.png]`.

Each LOGDIR is one run: its `*.monitor.csv` files (one per env, found at any depth) are merged in
finish-time order and drawn as one line, the moving average of episode returns against env steps,
episodes or wall-clock seconds (`--x`). `--smooth=N` sets the window; the PNG is written atomically.
"""

import collections
import glob
import os
import sys

import numpy as np
from absl import flags

from unstable_ppo.checkpoint import write_atomically
from unstable_ppo.cli import UsageError, run_app
from unstable_ppo.envs.monitor import read_monitor

flags.DEFINE_string("output", "curves.png", "Where the PNG goes.")
flags.DEFINE_integer("smooth", 100, "Average the returns over this many trailing episodes.")
flags.DEFINE_string("title", None, "Plot title (default: the env ids in the Monitor headers).")
flags.DEFINE_string("x", "steps", "x axis: steps (env steps), episodes, or time (wall-clock seconds).")

FLAGS = flags.FLAGS

X_AXES = {"steps": "env steps", "episodes": "episodes", "time": "wall-clock seconds"}

Run = collections.namedtuple("Run", ["steps", "returns", "times", "env_ids"])
Run.__doc__ = """One run's episodes in finish order: cumulative env steps, returns, seconds since start."""


def monitor_files(logdir):
    """The `*.monitor.csv` files under `logdir` (or `logdir` itself, if it is a file)."""
    if os.path.isfile(logdir):
        return [logdir]
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"no such directory: {logdir}")
    pattern = os.path.join(glob.escape(logdir), "**", "*.monitor.csv")
    files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    if not files:
        raise FileNotFoundError(f"no *.monitor.csv files under {logdir}")
    return files


def read_file(filename):
    """(t_start, env_id, rows) of one Monitor CSV; ValueError naming the file if it is corrupt."""
    try:
        header, rows = read_monitor(filename)
        return float(header["t_start"]), header.get("env_id"), rows
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        if isinstance(e, ValueError) and str(filename) in str(e):
            raise
        raise ValueError(f"{filename} is not a valid Monitor CSV: {type(e).__name__}: {e}") from e


def load_run(logdir):
    """A `Run` from all Monitor CSVs under `logdir`, episodes merged by absolute finish time."""
    episodes, starts, env_ids = [], [], []
    for filename in monitor_files(logdir):
        t_start, env_id, rows = read_file(filename)
        starts.append(t_start)
        if env_id is not None and env_id not in env_ids:
            env_ids.append(env_id)
        episodes += [(t_start + row["t"], row["l"], row["r"]) for row in rows]
    episodes.sort(key=lambda e: e[0])  # stable: ties keep file order
    finish = np.array([e[0] for e in episodes], dtype=np.float64)
    lengths = np.array([e[1] for e in episodes], dtype=np.int64)
    returns = np.array([e[2] for e in episodes], dtype=np.float64)
    return Run(np.cumsum(lengths), returns, finish - min(starts), tuple(env_ids))


def moving_average(values, window):
    """Trailing mean over `min(window, n)` values; the first points average what there is so far."""
    if window <= 0:
        raise UsageError(f"smooth must be a positive integer, got {window}")
    values = np.asarray(values, dtype=np.float64)
    window = min(window, len(values))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def labels(logdirs):
    """The shortest path suffixes that tell the runs apart; the path as given for one run, or if none does."""
    if len(logdirs) == 1:
        return [os.path.normpath(logdirs[0])]
    parts = [os.path.abspath(d).strip(os.sep).split(os.sep) for d in logdirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = [os.path.join(*p[-k:]) or os.sep for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(logdirs)


def plot_runs(logdirs, output, smooth=100, x="steps", title=None):
    """Draw one smoothed return curve per run into the PNG `output`; returns `output`."""
    if isinstance(logdirs, (str, os.PathLike)):
        logdirs = [logdirs]
    logdirs = [os.fspath(d) for d in logdirs]
    if not logdirs:
        raise UsageError("no LOGDIR given: python -m unstable_ppo.plot LOGDIR [LOGDIR ...]")
    if x not in X_AXES:
        raise UsageError(f"unknown --x={x}: use one of {', '.join(X_AXES)}")
    if smooth <= 0:
        raise UsageError(f"smooth must be a positive integer, got {smooth}")
    runs = [load_run(d) for d in logdirs]
    episodes = sum(len(run.returns) for run in runs)
    if episodes == 0:
        raise ValueError(f"no finished episodes in the Monitor CSVs of {', '.join(logdirs)}")
    # A bare Figure: no pyplot, so no display and no global state (matplotlib.use("Agg") is the CLI's).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for logdir, label, run in zip(logdirs, labels(logdirs), runs):
        if len(run.returns) == 0:
            print(f"note: no finished episodes yet in {logdir}", file=sys.stderr)
            continue
        xs = {"steps": run.steps, "episodes": np.arange(1, len(run.returns) + 1), "time": run.times}[x]
        ax.plot(xs, moving_average(run.returns, smooth), label=label, marker="o" if len(xs) == 1 else None)
        drawn += 1
    env_ids = sorted({env_id for run in runs for env_id in run.env_ids})
    ax.set_title(title if title is not None else ", ".join(env_ids) or "learning curves")
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(f"episode return (mean of last {smooth})" if smooth > 1 else "episode return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_atomically(output, lambda tmp: fig.savefig(tmp, format="png"))
    print(f"wrote {output} ({drawn} runs, {episodes} episodes)")
    return output


def plot(logdirs, argv_flags):
    import matplotlib  # late, like Figure in plot_runs: the plot extra is optional

    matplotlib.use("Agg")
    return plot_runs(logdirs, argv_flags.output, smooth=argv_flags.smooth, x=argv_flags.x,
                     title=argv_flags.title)


def entry_point():
    run_app(plot, positional=True)


if __name__ == "__main__":
    entry_point()
