"""Learning curves from Monitor CSVs: merging, smoothing, the PNG, and one-line CLI errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unstable_ppo.plot import load_run, moving_average, plot_runs

pytestmark = pytest.mark.backend_independent  # Monitor CSVs and matplotlib: no Keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_monitor(path, t_start, episodes, env_id="CartPole-v1"):
    """A Monitor CSV by hand: episodes are (return, length, seconds since t_start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#" + json.dumps({"t_start": t_start, "env_id": env_id}), "r,l,t"]
    lines += [f"{r},{l},{t}" for r, l, t in episodes]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def runs(tmp_path):
    """Two runs of two envs each; env 1 starts 0.5 s after env 0."""
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    write_monitor(a / "monitor" / "0.monitor.csv", 1000.0, [(10.0, 10, 1.0), (30.0, 30, 4.0), (5.0, 5, 6.0)])
    write_monitor(a / "monitor" / "1.monitor.csv", 1000.5, [(20.0, 20, 2.0), (40.0, 40, 3.0)])
    write_monitor(b / "monitor" / "0.monitor.csv", 2000.0, [(float(i), i, i) for i in range(1, 8)],
                  env_id="Acrobot-v1")
    write_monitor(b / "monitor" / "nested" / "1.monitor.csv", 2000.0, [(100.0, 50, 3.5)], env_id="Acrobot-v1")
    return a, b


def test_load_run_merges_episodes_by_finish_time(runs):
    a, _ = runs
    run = load_run(a)
    # Absolute finish times: env0 1001, 1004, 1006; env1 1002.5, 1003.5.
    np.testing.assert_array_equal(run.returns, [10.0, 20.0, 40.0, 30.0, 5.0])
    np.testing.assert_array_equal(run.steps, np.cumsum([10, 20, 40, 30, 5]))
    np.testing.assert_allclose(run.times, [1.0, 2.5, 3.5, 4.0, 6.0])
    assert run.env_ids == ("CartPole-v1",)


def test_load_run_finds_monitor_files_at_any_depth(runs):
    _, b = runs
    run = load_run(b)
    np.testing.assert_array_equal(run.returns, [1.0, 2.0, 3.0, 100.0, 4.0, 5.0, 6.0, 7.0])
    assert run.steps[-1] == sum(range(1, 8)) + 50


@pytest.mark.parametrize("window", [1, 3, 100])
def test_moving_average_is_the_trailing_mean(window):
    values = np.random.default_rng(0).normal(size=20)
    w = min(window, len(values))
    expected = [values[max(0, i - w + 1):i + 1].mean() for i in range(len(values))]
    np.testing.assert_allclose(moving_average(values, window), expected)
    # Once the window is full it is the textbook moving average.
    full = np.convolve(values, np.ones(w) / w, "valid")
    np.testing.assert_allclose(moving_average(values, window)[w - 1:], full)


@pytest.mark.parametrize("x", ["steps", "episodes", "time"])
def test_plot_runs_writes_a_png(runs, tmp_path, capsys, x):
    out = tmp_path / "out" / "curves.png"
    assert plot_runs(runs, str(out), smooth=2, x=x) == str(out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert capsys.readouterr().out.strip() == f"wrote {out} (2 runs, 13 episodes)"
    assert os.listdir(out.parent) == ["curves.png"]  # no temporary file left behind


@pytest.mark.parametrize("kwargs, message", [
    ({"smooth": 0}, "smooth must be a positive integer"),
    ({"x": "hours"}, "unknown --x=hours"),
])
def test_plot_runs_rejects_bad_arguments(runs, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_runs(runs, str(tmp_path / "c.png"), **kwargs)
    assert not (tmp_path / "c.png").exists()


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "unstable_ppo.plot", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_writes_the_png(runs, tmp_path):
    a, b = runs
    out = tmp_path / "curves.png"
    proc = cli(a, b, f"--output={out}", "--smooth=3", "--title=two runs", "--x=episodes")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"wrote {out} (2 runs, 13 episodes)"
    assert out.read_bytes().startswith(b"\x89PNG")


def test_cli_errors_are_one_line(runs, tmp_path):
    a, _ = runs
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt" / "monitor" / "0.monitor.csv"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("r,l,t\n1,2,3\n")
    bad_row = tmp_path / "bad_row" / "0.monitor.csv"
    write_monitor(bad_row, 1000.0, [(1.0, 2, 3.0), ("oops", 2, 4.0)])
    no_episodes = tmp_path / "no_episodes" / "0.monitor.csv"
    write_monitor(no_episodes, 1000.0, [])
    cases = [
        ((), "no LOGDIR given"),
        ((tmp_path / "missing",), "no such directory"),
        ((tmp_path / "empty",), "no *.monitor.csv files"),
        ((a, corrupt.parent.parent), "is not a Monitor CSV"),
        ((bad_row.parent,), "is not a valid Monitor CSV"),
        ((no_episodes.parent,), "no finished episodes"),
        ((a, "--smooth=0"), "smooth must be a positive integer"),
        ((a, "--x=hours"), "unknown --x=hours"),
    ]
    for args, message in cases:
        out = tmp_path / "c.png"
        proc = cli(*args, f"--output={out}")
        assert proc.returncode == 2, (args, proc.stderr[-3000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr and not out.exists()
