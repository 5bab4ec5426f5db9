"""benchmarks/suite.py without training: its statistics, what it does with a run directory, the report.

Run directories are written by hand (metrics.json, model/latest/ppo.json, training.log, Monitor
CSVs, as the runner writes them); the env probe, a subprocess, is replaced by a stub. Nothing here
imports Keras or depends on the backend.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent  # no Keras (see above)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


@pytest.fixture(scope="module")
def suite():
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)  # suite.py imports harness as a sibling, as when run as a script
    spec = importlib.util.spec_from_file_location("benchmarks_suite", os.path.join(BENCHMARKS, "suite.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(logdir, steps, backend="tensorflow", final=None, resumed=False):
    """A run directory: a checkpoint's ppo.json for `steps`, and metrics.json if `final` is given."""
    os.makedirs(os.path.join(logdir, "model", "latest"), exist_ok=True)
    with open(os.path.join(logdir, "model", "latest", "ppo.json"), "w") as f:
        json.dump({"keras_backend": backend, "num_timesteps": steps,
                   "run": {"flags": {"total_timesteps": steps, "num_episodes": None}}}, f)
    log = ["2026-12-02 10:00:00,000 new run: flags {}", "2026-12-02 10:00:30,500 update 1: ..."]
    if resumed:
        log += ["2026-12-02 10:00:31,000 stopped by SIGTERM after 256 steps: checkpoint saved",
                "2026-12-02 11:00:00,000 resumed run: flags {}", "2026-12-02 11:00:10,000 update 2: ..."]
    with open(os.path.join(logdir, "training.log"), "w") as f:
        f.write("\n".join(log) + "\n")
    os.makedirs(os.path.join(logdir, "monitor"), exist_ok=True)
    with open(os.path.join(logdir, "monitor", "0.monitor.csv"), "w") as f:
        f.write("#" + json.dumps({"t_start": 1000.0, "env_id": "CartPole-v1"}) + "\nr,l,t\n")
        f.writelines(f"{10 + i},{10 + i},{i}\n" for i in range(30))
    if final is not None:
        with open(os.path.join(logdir, "metrics.json"), "w") as f:
            json.dump({"env_id": "CartPole-v1", "backend": backend, "total_timesteps": steps + 48,
                       "wall_time_s": 12.5, "steps_per_second": 160.0, "eval_episodes": 10,
                       "eval_deterministic": True, "eval_wall_time_s": 1.0,
                       "latest": {"mean_return": final, "std_return": 1.0},
                       "best": {"mean_return": final + 1, "std_return": 0.0}}, f)


def test_iqm_weights(suite):
    assert suite.iqm_weights(1) == pytest.approx([1.0])
    assert suite.iqm_weights(2) == pytest.approx([0.5, 0.5])
    assert suite.iqm_weights(3) == pytest.approx([1 / 6, 2 / 3, 1 / 6])
    assert suite.iqm_weights(4) == pytest.approx([0, 0.5, 0.5, 0])
    for n in range(1, 20):
        assert suite.iqm_weights(n).sum() == pytest.approx(1.0)


def test_iqm_is_trim_mean_for_multiples_of_4(suite):
    scores = [7.0, -3.0, 100.0, 2.0, 5.0, 1.0, 0.0, 9.0]  # sorted: -3 0 1 2 5 7 9 100
    assert suite.iqm(scores) == pytest.approx(np.mean([1.0, 2.0, 5.0, 7.0]))
    assert suite.iqm([3.0, 1.0, 2.0]) == pytest.approx((1 + 4 * 2 + 3) / 6)
    assert suite.iqm([]) is None


def test_bootstrap_ci(suite):
    scores = [100.0, 250.0, 480.0]
    low, high = suite.bootstrap_ci(scores)
    eps = 1e-9  # rounding in the weighted sums
    assert min(scores) - eps <= low <= suite.iqm(scores) <= high <= max(scores) + eps
    assert suite.bootstrap_ci(scores) == [low, high]  # fixed bootstrap seed
    assert suite.bootstrap_ci([42.0]) == [42.0, 42.0]
    assert suite.bootstrap_ci([]) is None


def test_normalized(suite):
    assert suite.normalized(500.0, 20.0, 500.0) == pytest.approx(1.0)
    assert suite.normalized(20.0, 20.0, 500.0) == pytest.approx(0.0)
    assert suite.normalized(-130.0, -500.0, -73.5) == pytest.approx(370 / 426.5)
    assert suite.normalized(1.0, None, 500.0) is None
    assert suite.normalized(1.0, 0.0, None) is None


def test_run_state(suite, tmp_path):
    logdir = str(tmp_path / "run")
    assert suite.run_state(logdir, 2000, "jax") == ("new", None)
    fake_run(logdir, 2000, backend="jax")
    assert suite.run_state(logdir, 2000, "jax") == ("resume", None)
    state, reason = suite.run_state(logdir, 3000, "jax")
    assert state == "conflict" and "2000 steps, not 3000" in reason
    state, reason = suite.run_state(logdir, 2000, "torch")
    assert state == "conflict" and "jax run" in reason
    fake_run(logdir, 2000, backend="jax", final=400.0)
    assert suite.run_state(logdir, 2000, "jax") == ("finished", None)


def test_collect_run_sums_sessions(suite, tmp_path):
    logdir = str(tmp_path / "run")
    fake_run(logdir, 2000, final=400.0, resumed=True)
    run = suite.collect_run("CartPole-v1", 0, logdir, 2000, "tensorflow")
    assert run["state"] == "finished" and run["final"] == 400.0
    assert run["resumed"] and run["sessions"] == 2
    assert run["log_wall_time_s"] == pytest.approx(31.0 + 10.0)


def test_job_command(suite):
    args = suite.parse_args(["--backend=jax", "--nice=10"])
    job = suite.Job("CartPole-v1", 2, "/tmp/x/CartPole-v1/2", resume=True, steps=2000)
    command = job.command(args)
    assert command[:3] == ["nice", "-n", "10"]
    assert command[4:7] == ["-m", "unstable_ppo.run", "--env_id=CartPole-v1"]
    assert {"--seed=2", "--logdir=/tmp/x/CartPole-v1/2", "--backend=jax", "--total_timesteps=2000",
            "--resume"} <= set(command)
    command = suite.Job("CartPole-v1", 0, "/tmp/y", resume=False, steps=None).command(suite.parse_args(["--nice=0"]))
    assert command[0] == sys.executable and "--resume" not in command
    assert not any(c.startswith("--total_timesteps") for c in command)


def test_report(suite, tmp_path, monkeypatch, capsys):
    """--report on finished, unfinished and conflicting runs, a skipped env: the table, JSON and PNG."""
    pytest.importorskip("matplotlib")
    logroot, output = tmp_path / "runs", tmp_path / "out"
    budget = suite.scaled(suite.budget_of("CartPole-v1")[0], 0.02)
    fake_run(str(logroot / "CartPole-v1" / "0"), budget, final=100.0)
    fake_run(str(logroot / "CartPole-v1" / "1"), budget, final=300.0, resumed=True)
    fake_run(str(logroot / "CartPole-v1" / "2"), budget)  # stopped: not counted
    fake_run(str(logroot / "Pendulum-v1" / "0"), 999)  # another budget: a conflict

    def probe(env_ids, cache):
        out = {e: {"status": "ok", "random": {"mean_return": 20.0, "episodes": suite.RANDOM_EPISODES}}
               for e in env_ids}
        out["Hopper-v5"] = {"status": "skipped", "reason": "MuJoCo is not installed"}
        return out

    monkeypatch.setattr(suite, "probe", probe)
    code = suite.main(["--envs=CartPole-v1,Pendulum-v1,Hopper-v5", "--seeds=3", "--budget_scale=0.02", "--report",
                       f"--logroot={logroot}", f"--output={output}"])
    assert code == 0
    table = capsys.readouterr().out
    assert "budget × 0.02 (a scaled check, NOT the Zoo's budget)" in table
    assert "| CartPole-v1 | 2k | 2/3 | 200.0 ± 100.0 |" in table
    assert "160 † | 12 s † |" in table  # a resumed run: last session's figures, marked
    assert "skipped: MuJoCo is not installed" in table
    assert "conflict (1/3 seeds)" in table
    (json_path,) = output.glob("suite_*_scale0.02.json")
    assert os.path.isfile(str(json_path)[:-5] + ".png")
    data = json.loads(json_path.read_text())
    assert data["suite"]["budget_scale"] == 0.02 and data["table"] in table
    cartpole = data["envs"][0]
    assert cartpole["scores"] == [100.0, 300.0] and cartpole["unfinished"] == [2]
    assert cartpole["normalized"] == pytest.approx((200 - 20) / (500 - 20))
    assert data["random"]["CartPole-v1"]["mean_return"] == 20.0
    assert suite.cached_random(str(output))["CartPole-v1"]["mean_return"] == 20.0


@pytest.fixture(scope="module")
def sb3_suite():
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location("benchmarks_sb3_suite", os.path.join(BENCHMARKS, "sb3_suite.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sb3_peer_translates_every_mlp_and_recurrent_flagfile(sb3_suite):
    configs = os.path.join(ROOT, "unstable_ppo", "configs")
    for name in sorted(os.listdir(configs)):
        if name != "atari.flags":  # the Atari pipeline's flags are the runner's own
            assert sb3_suite.settings(name[: -len(".flags")])  # no bundled env flagfile sets an untranslated flag
    assert sb3_suite.settings("PendulumNoVel-v1")["recurrent"] == "true"


@pytest.mark.parametrize("lines, named", [
    (["--recurrent=true", "--hidden_layer_size=8"], "hidden_sizes (an MLP before the LSTM)"),  # the runner's 64,64
    (["--hidden_sizes=8", "--use_kl_loss=true"], "use_kl_loss"),
    (["--timestep_size=8"], "timestep_size"),  # a recurrent flag without --recurrent is not translated either
])
def test_sb3_peer_refuses_what_it_cannot_translate(sb3_suite, tmp_path, monkeypatch, lines, named):
    path = tmp_path / "X-v0.flags"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sb3_suite.harness, "flagfile", lambda env_id: str(path))
    with pytest.raises(SystemExit, match="X-v0's flagfile sets .*" + named.split(" ")[0]):
        sb3_suite.settings("X-v0")


def test_across_envs_is_the_iqm_of_the_normalized_scores(suite):
    summary = suite.across_envs([1.0, 0.5, None, 2.0])
    assert summary["envs"] == 3
    assert summary["iqm"] == pytest.approx(0.5 / 6 + 1.0 * 2 / 3 + 2.0 / 6)  # 3 values weigh 1/6, 2/3, 1/6
    assert summary["mean"] == pytest.approx(3.5 / 3)
    low, high = summary["iqm_ci"]
    assert 0.5 <= low <= summary["iqm"] <= high <= 2.0
    assert suite.across_envs([None]) is None


def _suite_json(path, rows, scale=1.0, backend="jax"):
    path.write_text(json.dumps({"suite": {"budget_scale": scale, "backend": backend}, "envs": rows}))
    return str(path)


def _row(env_id, mean, random_score, normalized=None):
    return {"env_id": env_id, "status": "ok", "mean": mean, "std": 1.0, "iqm": mean, "iqm_ci": [mean, mean],
            "random": random_score, "budget": 100_000, "seeds_finished": 3, "seeds": 3, "normalized": normalized}


def test_combine_takes_the_latest_row_per_env_and_normalizes_again(suite, tmp_path):
    old = _suite_json(tmp_path / "a.json", [_row("CartPole-v1", 100.0, 21.0, 0.1), _row("Acrobot-v1", -73.506, -500.0)],
                      backend="tensorflow")
    new = _suite_json(tmp_path / "b.json", [_row("CartPole-v1", 260.5, 21.0, normalized=123.0),
                                            {"env_id": "Ant-v5", "status": "skipped: no mujoco"}])
    rows, summary, table = suite.combine([old, new])
    by_env = {row["env_id"]: row for row in rows}
    assert set(by_env) == {"CartPole-v1", "Acrobot-v1"}
    assert by_env["CartPole-v1"]["normalized"] == pytest.approx((260.5 - 21.0) / (500.0 - 21.0))  # the Zoo table's
    assert by_env["CartPole-v1"]["backend"] == "jax" and by_env["CartPole-v1"]["source"] == "b.json"
    assert by_env["Acrobot-v1"]["normalized"] == pytest.approx(1.0)
    assert summary["envs"] == 2 and "| CartPole-v1 | jax | 100k | 3/3 |" in table
    assert table.splitlines()[-1].startswith("Across the suite (2 envs with a Zoo score): IQM of the normalized")


def test_combine_refuses_scaled_checks_and_other_files(suite, tmp_path):
    with pytest.raises(SystemExit, match="scaled check"):
        suite.combine([_suite_json(tmp_path / "s.json", [_row("CartPole-v1", 1.0, 0.0)], scale=0.02)])
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(SystemExit, match="not a suite"):
        suite.combine([str(tmp_path / "x.json")])


def test_combine_merges_other_seeds_of_the_same_runs(suite, tmp_path):
    def run(seed, final):
        return {"seed": seed, "state": "finished", "final": final, "steps_per_second": 100.0, "wall_time_s": 10.0,
                "resumed": False, "eval_deterministic": True}

    def row(runs):
        finals = [r["final"] for r in runs]
        return dict(_row("CartPole-v1", float(np.mean(finals)), 21.0), runs=runs, budget_source="flagfile",
                    seeds_finished=len(runs), seeds=len(runs))

    first = _suite_json(tmp_path / "first.json", [row([run(0, 500.0)])])
    more = _suite_json(tmp_path / "more.json", [row([run(1, 260.5), run(2, 21.0)])])
    rows, _, table = suite.combine([first, more])
    (merged,) = rows
    assert merged["seeds_finished"] == 3 and merged["scores"] == [500.0, 260.5, 21.0]
    assert merged["mean"] == pytest.approx(781.5 / 3) and merged["std"] == pytest.approx(np.std([500, 260.5, 21]))
    assert merged["normalized"] == pytest.approx((781.5 / 3 - 21.0) / 479.0)
    assert merged["source"] == "first.json + more.json" and "| 3/3 |" in table
    # The same seed again, another backend or another budget: the later row replaces the earlier one.
    again = _suite_json(tmp_path / "again.json", [row([run(0, 100.0)])], backend="torch")
    (replaced,), _, _ = suite.combine([first, more, again])
    assert replaced["mean"] == 100.0 and replaced["backend"] == "torch" and replaced["source"] == "again.json"


def test_first_seed_reports_the_seeds_from_there(suite, tmp_path, monkeypatch, capsys):
    logroot, output = tmp_path / "runs", tmp_path / "out"
    budget = suite.scaled(suite.budget_of("CartPole-v1")[0], 0.02)
    fake_run(str(logroot / "CartPole-v1" / "0"), budget, final=10.0)  # not among seeds 1-2: not counted
    fake_run(str(logroot / "CartPole-v1" / "1"), budget, final=100.0)
    fake_run(str(logroot / "CartPole-v1" / "2"), budget, final=300.0)
    monkeypatch.setattr(suite, "probe", lambda env_ids, cache: {e: {"status": "ok", "random": {
        "mean_return": 20.0, "episodes": suite.RANDOM_EPISODES}} for e in env_ids})
    assert suite.main(["--envs=CartPole-v1", "--first_seed=1", "--seeds=2", "--budget_scale=0.02", "--report",
                       f"--logroot={logroot}", f"--output={output}"]) == 0
    assert "| CartPole-v1 | 2k | 2/2 | 200.0 ± 100.0 |" in capsys.readouterr().out
    (json_path,) = output.glob("suite_*.json")
    assert [r["seed"] for r in json.loads(json_path.read_text())["envs"][0]["runs"]] == [1, 2]
    with pytest.raises(SystemExit):
        suite.parse_args(["--first_seed=-1"])
