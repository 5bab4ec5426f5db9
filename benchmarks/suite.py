"""The benchmark suite: the runner with each env's bundled flagfile, at the RL Zoo's budget, over seeds.

Each run is the real runner in its own process, started with `nice`:

    python -m unstable_ppo.run --env_id=ENV --seed=S --logdir=LOGROOT/ENV/S --backend=B --verbose=0

which applies `unstable_ppo/configs/ENV.flags` by itself. The budget is that flagfile's
`--total_timesteps` (the Zoo's budget for the env; the Zoo table below gives it where there is no
flagfile yet); `--budget_scale` multiplies it for a quick check, and is then passed on as
`--total_timesteps`. Then one markdown table and one figure come out of the finished runs.

    python benchmarks/suite.py                                   # every env, 3 seeds, tensorflow
    python benchmarks/suite.py --envs=CartPole-v1,Pendulum-v1 --seeds=5 --backend=jax --jobs=2
    python benchmarks/suite.py --report                          # the table and figure of what is finished
    python benchmarks/suite.py --envs=CartPole-v1 --seeds=2 --budget_scale=0.02 \
        --logroot=/tmp/suite --output=/tmp/suite                 # a quick check of the script itself
    python benchmarks/suite.py --combine benchmarks/results/suite_A.json benchmarks/results/suite_B.json
                                                                 # one table from several suites' results

**Resumable.** A run whose `metrics.json` exists (the runner's final report wrote it) is not run
again; a run with a checkpoint but no `metrics.json` (stopped, killed, out of time) is continued
with the runner's `--resume`; anything else starts afresh. Ctrl-C (or SIGTERM) asks the running
runs to stop after their current update and save a checkpoint; the next call resumes them. A
logdir that holds a run with another budget or backend (another `--budget_scale`, `--backend`)
is neither run nor counted: the table says so; use another `--logroot`. `--report` is the same
call that runs nothing: give it the same `--backend` and `--budget_scale` as the runs.

**Skipped envs.** An env whose dependencies are missing (Box2D: `pip install "gymnasium[box2d]"`;
MuJoCo: `pip install "gymnasium[mujoco]"`) is a row `skipped: <gymnasium's one-line reason>`,
not a failure: every env is made once in a probe process before anything is run.

**What the table shows**, per env, over the seeds whose run finished:

- *final score*: per seed, the runner's final report's evaluation of the latest policy
  (`metrics.json` `latest.mean_return`: 10 episodes, deterministic unless the flagfile says
  otherwise, on eval envs seeded seed + 10000); the table gives mean ± std over seeds (numpy's
  std, ddof=0).
- *IQM*: the interquartile mean of the per-seed final scores, i.e. the mean of the middle 50% of
  their empirical distribution: the sorted scores weighted by how much of each one's 1/n of
  probability mass lies between the 25th and 75th percentiles (a score straddling a boundary
  counts in part). For n divisible by 4 this is `scipy.stats.trim_mean(x, 0.25)` (rliable's IQM);
  for 3 seeds it weighs the sorted scores 1/6, 2/3, 1/6. With its 95% percentile-bootstrap
  confidence interval: 10,000 resamples of the seeds with replacement, bootstrap seed 0, numpy
  only. With 3 seeds the interval is wide and, being built from 3 values, can never reach beyond
  the lowest and highest seed: read it as a rough range, not a calibrated 95% interval.
- *Zoo*: the RL Zoo's published PPO score for the env and its training budget (one run each:
  see ZOO below), "n/a" where none is known.
- *random*: the mean return of a uniformly random policy, measured here: 10 episodes, episode i
  with `env.reset(seed=i)` and `env.action_space.seed(i)`, actions `env.action_space.sample()`.
  It is kept in the results JSON and read back from any `suite_*.json` in `--output`.
- *normalized*: (mean final score - random) / (Zoo - random): 1 is the Zoo's score, 0 random's.
- *steps/s*, *wall time*: mean per run, from `metrics.json` (the training loop with its
  evaluations, not the start-up or the final report). For a resumed run these cover the last
  session only (marked †); the JSON also has each run's wall time summed over all its sessions
  from `training.log`'s timestamps.

The results go to `OUTPUT/suite_DATE.json` (the table, every run's figures, the random returns,
the machine) and `OUTPUT/suite_DATE.png` (one learning-curve panel per env, every seed: the
Monitor CSVs' episode returns, a moving average, against env steps, with the Zoo's and the random
policy's scores as lines). A scaled budget is in the file names (`suite_DATE_scale0.02.*`), the
JSON and the table's title, so a quick check can never pass for a full run.
"""

import argparse
import collections
import datetime
import glob
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

import harness

# The RL Zoo's published PPO scores, from rl-baselines3-zoo's benchmark.md ("Performance of trained
# agents", https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md, read at commit
# 0088472): the mean return of ONE trained agent (its n_timesteps, the budget here) over ~150k
# evaluation steps, deterministic policy. The Zoo ran older env versions (zoo_env): MuJoCo v3
# against our v5, LunarLander v2 against our v3; the tasks are the same, the code not identical.
# PendulumNoVel-v1's row is the ppo_lstm one (RecurrentPPO), added to benchmark.md later (commit
# de58209). score None: no published figure (printed "n/a"); budget None: the flagfile must give it.
ZOO = {
    "CartPole-v1": dict(score=500.0, budget=100_000, zoo_env="CartPole-v1"),
    "Acrobot-v1": dict(score=-73.506, budget=1_000_000, zoo_env="Acrobot-v1"),
    "MountainCar-v0": dict(score=-110.423, budget=1_000_000, zoo_env="MountainCar-v0"),
    "MountainCarContinuous-v0": dict(score=88.343, budget=20_000, zoo_env="MountainCarContinuous-v0"),
    "Pendulum-v1": dict(score=-172.225, budget=100_000, zoo_env="Pendulum-v1"),
    "PendulumNoVel-v1": dict(score=-217.933, budget=100_000, zoo_env="PendulumNoVel-v1"),
    "LunarLander-v3": dict(score=242.119, budget=1_000_000, zoo_env="LunarLander-v2"),
    "LunarLanderContinuous-v3": dict(score=270.863, budget=1_000_000, zoo_env="LunarLanderContinuous-v2"),
    "BipedalWalker-v3": dict(score=213.299, budget=5_000_000, zoo_env="BipedalWalker-v3"),
    "Hopper-v5": dict(score=2410.435, budget=1_000_000, zoo_env="Hopper-v3"),
    "Walker2d-v5": dict(score=3478.798, budget=1_000_000, zoo_env="Walker2d-v3"),
    "Ant-v5": dict(score=1327.158, budget=1_000_000, zoo_env="Ant-v3"),
    "Swimmer-v5": dict(score=281.561, budget=1_000_000, zoo_env="Swimmer-v3"),
    "HalfCheetah-v5": dict(score=5819.0, budget=1_000_000, zoo_env="HalfCheetah-v3"),  # 5819, as the issue gives it
}
ZOO_SOURCE = ("rl-baselines3-zoo benchmark.md (PPO rows, one run each), commit 0088472; "
              "PendulumNoVel-v1: its ppo_lstm row, commit de58209")
DEFAULT_ENVS = list(ZOO)  # cheap ones first

RANDOM_EPISODES = 10  # episode i: env.reset(seed=i), env.action_space.seed(i)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")


# -- statistics -----------------------------------------------------------------------------------


def iqm_weights(n):
    """The weights of the n sorted scores in their interquartile mean (they sum to 1).

    Score i (0-based, sorted) holds the probability mass [i/n, (i+1)/n]; its weight is the part of
    that inside [0.25, 0.75], divided by 0.5.
    """
    lows = np.arange(n) / n
    overlap = np.clip(np.minimum(lows + 1 / n, 0.75) - np.maximum(lows, 0.25), 0.0, None)
    return overlap / overlap.sum()  # = / 0.5, up to rounding


def iqm(scores):
    """The interquartile mean of `scores` (see `iqm_weights`); None for no scores."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    return None if scores.size == 0 else float(scores @ iqm_weights(scores.size))


def bootstrap_ci(scores, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, level=CI_LEVEL):
    """The percentile-bootstrap confidence interval of the IQM: [low, high], or None for no scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return None
    rng = np.random.default_rng(seed)
    samples = np.sort(scores[rng.integers(0, scores.size, size=(resamples, scores.size))], axis=1)
    statistics = samples @ iqm_weights(scores.size)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(statistics, [tail, 100 - tail])
    return [float(low), float(high)]


def normalized(score, random_score, zoo_score):
    """(score - random) / (Zoo - random), or None when a term is missing (or Zoo == random)."""
    if score is None or random_score is None or zoo_score is None or zoo_score == random_score:
        return None
    return (score - random_score) / (zoo_score - random_score)


def _more_seeds(earlier, row, backend):
    """Whether `row` holds other seeds of `earlier`'s runs: same budget and backend, no seed in common."""
    finished = {r["seed"] for r in earlier.get("runs", []) if r["state"] == "finished"}
    new = {r["seed"] for r in row.get("runs", []) if r["state"] == "finished"}
    return (earlier["backend"] == backend and earlier["budget"] == row["budget"] and new
            and not finished & new)


def across_envs(normalized_scores):
    """The suite's one figure: the IQM of the envs' normalized scores, its bootstrap CI over envs, the mean."""
    values = [v for v in normalized_scores if v is not None]
    if not values:
        return None
    return {"envs": len(values), "iqm": iqm(values), "iqm_ci": bootstrap_ci(values), "mean": float(np.mean(values))}


def across_envs_line(summary):
    if summary is None:
        return "Across the suite: no env has a normalized score."
    low, high = summary["iqm_ci"]
    return (f"Across the suite ({summary['envs']} envs with a Zoo score): IQM of the normalized scores "
            f"{summary['iqm']:.2f} [{low:.2f}, {high:.2f}] (95% percentile bootstrap over envs), mean "
            f"{summary['mean']:.2f}.")


# -- budgets, run directories -------------------------------------------------------------------


def budget_of(env_id):
    """(the env's budget in steps, where it comes from): the flagfile's --total_timesteps, else the Zoo's."""
    path = harness.flagfile(env_id)
    if os.path.isfile(path):
        value = harness.read_flagfile(path).get("total_timesteps")
        if value is not None:
            return int(float(value)), os.path.relpath(path, harness.ROOT)
    zoo_budget = ZOO.get(env_id, {}).get("budget")
    if zoo_budget is not None:
        return zoo_budget, "Zoo table (no flagfile --total_timesteps)"
    return None, None


def scaled(budget, scale):
    return max(1, int(round(budget * scale)))


def run_dir(logroot, env_id, seed):
    return os.path.join(logroot, env_id, str(seed))


def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_state(logdir, target, backend):
    """("finished" | "resume" | "new" | "conflict", reason): what to do with the run in `logdir`.

    `target` is the number of steps the run must be asked for, `backend` its Keras backend.
    """
    metrics = _load_json(os.path.join(logdir, "metrics.json"))
    meta = _load_json(os.path.join(logdir, "model", "latest", "ppo.json"))
    if metrics is None and meta is None:
        return "new", None
    saved = ((meta or {}).get("run") or {}).get("flags") or {}
    steps = saved.get("total_timesteps")
    if saved.get("num_episodes") is None and steps is not None and steps != target:
        return "conflict", (f"holds a run of {steps} steps, not {target} (another --budget_scale?): "
                            f"use another --logroot")
    ran_on = (metrics or {}).get("backend") or (meta or {}).get("keras_backend")
    if ran_on is not None and ran_on != backend:
        return "conflict", f"holds a {ran_on} run, not {backend}: pass --backend={ran_on} or another --logroot"
    return ("finished", None) if metrics is not None else ("resume", None)


def log_sessions(logdir):
    """The sessions in `training.log`: [(first line's time, last line's time, resumed?)], times as datetimes."""
    sessions = []
    try:
        with open(os.path.join(logdir, "training.log")) as f:
            for line in f:
                m = _LOG_LINE.match(line)
                if not m:
                    continue
                when = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
                text = m[2]
                if text.startswith(("new run: flags", "resumed run: flags")) or not sessions:
                    sessions.append([when, when, text.startswith("resumed run")])
                sessions[-1][1] = when
    except OSError:
        pass
    return sessions


def collect_run(env_id, seed, logdir, target, backend):
    """One run's record for the results JSON (its figures if it finished)."""
    state, reason = run_state(logdir, target, backend)
    run = {"env_id": env_id, "seed": seed, "logdir": logdir, "state": state}
    if reason:
        run["reason"] = reason
    if state != "finished":
        return run
    metrics = _load_json(os.path.join(logdir, "metrics.json"))
    sessions = log_sessions(logdir)
    run.update(
        final=metrics["latest"]["mean_return"], final_std=metrics["latest"]["std_return"],
        best=metrics["best"]["mean_return"], total_timesteps=metrics["total_timesteps"],
        wall_time_s=metrics["wall_time_s"], steps_per_second=metrics["steps_per_second"],
        eval_wall_time_s=metrics.get("eval_wall_time_s"), eval_episodes=metrics.get("eval_episodes"),
        eval_deterministic=metrics.get("eval_deterministic"), backend=metrics.get("backend"),
        sessions=len(sessions), resumed=any(resumed for _, _, resumed in sessions),
        log_wall_time_s=round(sum((end - start).total_seconds() for start, end, _ in sessions), 1),
    )
    return run


# -- the probe job: can each env be made, and what does a random policy score? ---------------------


def probe_job(env_ids, random_envs):
    """(In a fresh interpreter) make each env once; measure the random policy on `random_envs`."""
    import gymnasium as gym

    import unstable_ppo  # noqa: F401  registers CartPoleNoVel-v1 and PendulumNoVel-v1 (no Keras)

    out = {}
    for env_id in env_ids:
        try:
            env = gym.make(env_id)
        except (gym.error.DependencyNotInstalled, ImportError) as e:
            out[env_id] = {"status": "skipped", "reason": _first_line(e)}
            continue
        except Exception as e:  # an unknown id, a broken env
            out[env_id] = {"status": "error", "reason": f"{type(e).__name__}: {_first_line(e)}"}
            continue
        result = {"status": "ok"}
        if env_id in random_envs:
            returns, lengths = [], []
            for i in range(RANDOM_EPISODES):
                env.reset(seed=i)
                env.action_space.seed(i)
                total, steps, done = 0.0, 0, False
                while not done:
                    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                    total, steps, done = total + float(reward), steps + 1, terminated or truncated
                returns.append(total)
                lengths.append(steps)
            result["random"] = {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
                                "returns": returns, "lengths": lengths, "episodes": RANDOM_EPISODES,
                                "gymnasium": gym.__version__}
        env.close()
        out[env_id] = result
    print(json.dumps(out))


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def cached_random(output_dir):
    """{env_id: random record} from the `suite_*.json` files in `output_dir` (newest file wins)."""
    cache = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "suite_*.json")), key=os.path.getmtime):
        data = _load_json(path) or {}
        for env_id, record in (data.get("random") or {}).items():
            if isinstance(record, dict) and record.get("episodes") == RANDOM_EPISODES and "mean_return" in record:
                cache[env_id] = record
    return cache


def probe(env_ids, random_cache):
    """{env_id: {"status", "reason"?, "random"?}} from one probe process."""
    need_random = [e for e in env_ids if e not in random_cache]
    result, output = harness.spawn(__file__, ["--probe_job", ",".join(env_ids), "--random_envs",
                                              ",".join(need_random)])
    if result is None:
        raise SystemExit(f"error: the env probe failed:\n{harness.failure_tail(output)}")
    for env_id, record in result.items():
        if "random" not in record and env_id in random_cache:
            record["random"] = random_cache[env_id]
    return result


# -- running --------------------------------------------------------------------------------------


class Job:
    def __init__(self, env_id, seed, logdir, resume, steps):
        self.env_id, self.seed, self.logdir, self.resume, self.steps = env_id, seed, logdir, resume, steps
        self.proc, self.start, self.out = None, None, None

    def name(self):
        return f"{self.env_id} seed {self.seed}"

    def command(self, args):
        command = ["nice", "-n", str(args.nice)] if args.nice else []
        command += [sys.executable, "-m", "unstable_ppo.run", f"--env_id={self.env_id}", f"--seed={self.seed}",
                    f"--logdir={self.logdir}", f"--backend={args.backend}", "--verbose=0"]
        if self.steps is not None:
            command.append(f"--total_timesteps={self.steps}")
        if self.resume:
            command.append("--resume")
        return command

    def launch(self, args):
        os.makedirs(self.logdir, exist_ok=True)
        command = self.command(args)
        self.out = open(os.path.join(self.logdir, "suite.out"), "a")
        self.out.write(f"== {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n")
        self.out.flush()
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=subprocess.STDOUT, cwd=harness.ROOT,
                                     env=harness.job_env(args.backend))

    def finish(self):
        self.out.close()
        with open(os.path.join(self.logdir, "suite.out")) as f:
            return f.read().rsplit("\n== ", 1)[-1]


def run_all(jobs, args):
    """Run the jobs, `args.jobs` at once; Ctrl-C or SIGTERM stops them cleanly (checkpoints saved)."""
    pending, running, done = collections.deque(jobs), [], 0
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                job = pending.popleft()
                job.launch(args)
                running.append(job)
                print(f"started {job.name()}{' (resuming)' if job.resume else ''}: {job.logdir}", file=sys.stderr,
                      flush=True)
            time.sleep(0.5)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                done += 1
                _report_exit(job, done, len(jobs))
    except KeyboardInterrupt:
        print(f"\nstopping: asking {len(running)} running run(s) to save a checkpoint and stop (the next call "
              f"resumes them; {len(pending)} not started)", file=sys.stderr, flush=True)
        for job in running:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)  # the runner's clean stop; unlike a 2nd SIGINT, never forced
        for job in running:
            job.proc.wait()
            done += 1
            _report_exit(job, done, len(jobs))
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
    return True


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _report_exit(job, i, n):
    output, code = job.finish(), job.proc.returncode
    seconds = time.perf_counter() - job.start
    if code == 0:
        metrics = _load_json(os.path.join(job.logdir, "metrics.json")) or {}
        score = metrics.get("latest", {}).get("mean_return")
        line = f"finished, final score {score:.1f}" if score is not None else "exited 0 without metrics.json"
    elif code in (130, 143):  # stopped by SIGINT or SIGTERM
        line = "stopped, checkpoint saved (the next call resumes it)"
    else:
        line = (f"FAILED (exit {code}); output in {os.path.join(job.logdir, 'suite.out')}:\n"
                + harness.failure_tail(output))
    print(f"[{i}/{n}] {job.name()}: {line} ({seconds:.0f} s)", file=sys.stderr, flush=True)


# -- the report -----------------------------------------------------------------------------------


def summarize(env_id, runs, budget, budget_source, probe_record, seeds):
    """One env's row for the JSON: its runs and, over those finished, the figures of the table."""
    zoo = ZOO.get(env_id, {})
    random_record = (probe_record or {}).get("random")
    random_score = random_record["mean_return"] if random_record else None
    row = {"env_id": env_id, "budget": budget, "budget_source": budget_source, "zoo": zoo.get("score"),
           "zoo_budget": zoo.get("budget"), "zoo_env": zoo.get("zoo_env"), "random": random_score, "runs": runs}
    status = (probe_record or {}).get("status", "ok")
    if status != "ok":
        row.update(status=status, reason=probe_record["reason"])
        return row
    if budget is None:
        row.update(status="error", reason="no budget: no flagfile --total_timesteps and no Zoo budget")
        return row
    finished = [r for r in runs if r["state"] == "finished"]
    scores = [r["final"] for r in finished]
    row.update(status="ok", seeds_finished=len(finished), seeds=len(seeds),
               conflicts=[r["reason"] for r in runs if r["state"] == "conflict"],
               unfinished=[r["seed"] for r in runs if r["state"] in ("new", "resume")])
    if scores:
        mean = float(np.mean(scores))
        row.update(
            scores=scores, mean=mean, std=float(np.std(scores)), iqm=iqm(scores), iqm_ci=bootstrap_ci(scores),
            normalized=normalized(mean, random_score, zoo.get("score")),
            normalized_iqm=normalized(iqm(scores), random_score, zoo.get("score")),
            steps_per_second=float(np.mean([r["steps_per_second"] for r in finished])),
            wall_time_s=float(np.mean([r["wall_time_s"] for r in finished])),
            resumed=any(r["resumed"] for r in finished),
            eval_deterministic=sorted({r["eval_deterministic"] for r in finished}, key=str),
        )
    return row


def fmt_steps(steps):
    if steps is None:
        return "n/a"
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps >= size and steps % (size // 10) == 0:
            return f"{steps / size:g}{unit}"
    return f"{steps:,}"


def fmt_score(value, like=None):
    """A score with 1 decimal, none from 1000 on (or as many as `like` gets: a mean's std, an IQM's CI)."""
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value if like is None else like) >= 1000 else f"{value:.1f}"


def fmt_seconds(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds} s"


def markdown_table(rows, suite, info):
    scale = suite["budget_scale"]
    n = len(suite["seeds"])
    title = f"PPO suite: unstable_ppo on {suite['backend']}, {n} seed{'s' if n != 1 else ''}, {suite['date'][:10]}"
    if scale != 1:
        title += f", budget × {scale:g} (a scaled check, NOT the Zoo's budget)"
    lines = [f"### {title}", "",
             "| env | budget | seeds | final score, mean ± std | IQM [95% CI] | Zoo (budget) | random | normalized | "
             "steps/s | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = set()
    for row in rows:
        budget = fmt_steps(row["budget"])
        zoo = "n/a" if row["zoo"] is None else f"{fmt_score(row['zoo'])} ({fmt_steps(row['zoo_budget'])})"
        random_score = fmt_score(row["random"])
        if row["status"] != "ok":
            lines.append(f"| {row['env_id']} | {budget} | – | {row['status']}: {row['reason']} | – | {zoo} | "
                         f"{random_score} | – | – | – |")
            continue
        seeds = f"{row['seeds_finished']}/{row['seeds']}"
        if "mean" not in row:
            what = (f"conflict ({len(row['conflicts'])}/{row['seeds']} seeds): {row['conflicts'][0]}"
                    if row["conflicts"] else f"not finished ({len(row['unfinished'])} to start or resume)")
            lines.append(f"| {row['env_id']} | {budget} | {seeds} | {what} | – | {zoo} | {random_score} | – | – "
                         f"| – |")
            continue
        low, high = row["iqm_ci"]
        dagger = " †" if row["resumed"] else ""
        if row["resumed"]:
            notes.add("† a run was resumed: its steps/s and wall time cover its last session only")
        if row["eval_deterministic"] != [True]:
            notes.add(f"{row['env_id']}: evaluated with the stochastic policy (the flagfile's --noeval_deterministic)")
        if row["conflicts"]:
            notes.add(f"{row['env_id']}: {len(row['conflicts'])} seed(s) not counted: {row['conflicts'][0]}")
        norm = "n/a" if row["normalized"] is None else f"{row['normalized']:.2f}"
        lines.append(
            f"| {row['env_id']} | {budget} | {seeds} | "
            f"{fmt_score(row['mean'])} ± {fmt_score(row['std'], row['mean'])} | "
            f"{fmt_score(row['iqm'])} [{fmt_score(low, row['iqm'])}, {fmt_score(high, row['iqm'])}] | {zoo} | "
            f"{random_score} | {norm} | "
            f"{row['steps_per_second']:.0f}{dagger} | {fmt_seconds(row['wall_time_s'])}{dagger} |")
    lines += ["", "Final score: the latest policy's 10-episode evaluation at the end of each run (deterministic); "
              "IQM over the per-seed final scores, percentile bootstrap (10,000 resamples, seed 0). "
              f"Zoo: {ZOO_SOURCE}. Normalized: (mean - random) / (Zoo - random). Steps/s and wall time: "
              "mean per run."]
    lines += [f"- {note}" for note in sorted(notes)]
    lines += ["", across_envs_line(across_envs(row.get("normalized") for row in rows))]
    lines += ["", harness.machine_line(info)]
    return "\n".join(lines)


def combine(paths):
    """One row per env from several suite JSON files, normalized again with this script's Zoo table, and the
    suite-wide figure over them: `(rows, summary, table)`.

    A later file's row for an env replaces an earlier one's, unless both ran other seeds of the same budget on
    the same backend (`--first_seed`): then their finished runs are summarized together.
    """
    rows = {}
    for path in paths:
        data = _load_json(path)
        if data is None or "envs" not in data or "suite" not in data:
            raise SystemExit(f"error: {path} is not a suite_*.json file")
        if data["suite"]["budget_scale"] != 1:
            raise SystemExit(f"error: {path} is a scaled check (budget x {data['suite']['budget_scale']:g}), "
                             f"not the Zoo's budget")
        for row in data["envs"]:
            if row.get("status") == "ok" and "mean" in row:
                source = os.path.basename(path)
                earlier = rows.get(row["env_id"])
                if earlier is not None and _more_seeds(earlier, row, data["suite"]["backend"]):
                    runs = [r for r in earlier["runs"] + row["runs"] if r["state"] == "finished"]
                    seeds = sorted(r["seed"] for r in runs)
                    probe_record = {"status": "ok", "random": {"mean_return": row["random"]}}
                    row = dict(summarize(row["env_id"], runs, row["budget"], row["budget_source"], probe_record,
                                         seeds), full_budget=row.get("full_budget"))
                    source = f"{earlier['source']} + {os.path.basename(path)}"
                zoo = ZOO.get(row["env_id"], {})
                rows[row["env_id"]] = dict(row, backend=data["suite"]["backend"], source=source,
                                           zoo=zoo.get("score"), zoo_budget=zoo.get("budget"),
                                           normalized=normalized(row["mean"], row["random"], zoo.get("score")))
    rows = list(rows.values())
    summary = across_envs(row["normalized"] for row in rows)
    lines = ["| env | backend | budget | seeds | final score, mean ± std | IQM [95% CI] | Zoo (budget) | random | "
             "normalized | from |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["iqm_ci"]
        zoo = "n/a" if row["zoo"] is None else f"{fmt_score(row['zoo'])} ({fmt_steps(row['zoo_budget'])})"
        norm = "n/a" if row["normalized"] is None else f"{row['normalized']:.2f}"
        lines.append(f"| {row['env_id']} | {row['backend']} | {fmt_steps(row['budget'])} | "
                     f"{row['seeds_finished']}/{row['seeds']} | "
                     f"{fmt_score(row['mean'])} ± {fmt_score(row['std'], row['mean'])} | "
                     f"{fmt_score(row['iqm'])} [{fmt_score(low, row['iqm'])}, {fmt_score(high, row['iqm'])}] | "
                     f"{zoo} | {fmt_score(row['random'])} | {norm} | {row['source']} |")
    lines += ["", across_envs_line(summary)]
    return rows, summary, "\n".join(lines)


def figure(rows, suite, path, smooth):
    """One learning-curve panel per env (every seed's Monitor episodes), into the PNG `path`."""
    if importlib.util.find_spec("unstable_ppo") is None:  # as harness.read_flagfile does
        sys.path.append(harness.ROOT)
    from matplotlib.figure import Figure

    from unstable_ppo.plot import load_run, moving_average

    ncols = min(4, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(figsize=(max(4 * ncols, 6), 3.2 * nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, row in zip(axes, rows):
        ax.set_title(f"{row['env_id']} ({fmt_steps(row['budget'])})", fontsize=10)
        drawn = 0
        for run in row["runs"]:
            if run["state"] == "conflict":
                continue
            try:
                data = load_run(run["logdir"])
            except (FileNotFoundError, ValueError):
                continue
            if len(data.returns):
                ax.plot(data.steps, moving_average(data.returns, smooth), lw=1,
                        label=f"seed {run['seed']}" + ("" if run["state"] == "finished" else " (unfinished)"))
                drawn += 1
        if not drawn:  # an empty panel that says why
            text = f"{row['status']}: {row['reason']}" if row["status"] != "ok" else "no episodes yet"
            ax.text(0.5, 0.5, textwrap.fill(text, 34), ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if row["zoo"] is not None:
            ax.axhline(row["zoo"], color="k", ls="--", lw=0.8, label="Zoo")
        if row["random"] is not None:
            ax.axhline(row["random"], color="grey", ls=":", lw=0.8, label="random")
        ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("env steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    title = [f"unstable_ppo on {suite['backend']}, {suite['date'][:10]}"]
    if suite["budget_scale"] != 1:
        title.append(f"budget × {suite['budget_scale']:g} (NOT the Zoo's budget)")
    title.append(f"training episodes' return, moving mean of {smooth}")
    title = "\n".join(title)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path + ".tmp.png", format="png", dpi=90)
    os.replace(path + ".tmp.png", path)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(DEFAULT_ENVS), help="comma-separated env ids (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds FIRST_SEED..FIRST_SEED+N-1 (default 3)")
    parser.add_argument("--first_seed", type=int, default=0,
                        help="the first seed (default 0): more seeds for an env, to --combine with the first ones")
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--logroot", default=os.path.join("benchmarks", "runs", "suite"),
                        help="each run's logdir is LOGROOT/ENV_ID/SEED")
    parser.add_argument("--budget_scale", type=float, default=1.0,
                        help="multiply every budget (a quick check); in the file names, JSON and table title")
    parser.add_argument("--report", action="store_true", help="run nothing: the table and figure of what is finished")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results"),
                        help="the directory for suite_DATE.json and suite_DATE.png")
    parser.add_argument("--smooth", type=int, default=20, help="the figure's moving average, in episodes")
    parser.add_argument("--nice", type=int, default=10, help="each run under `nice -n NICE` (0: not)")
    parser.add_argument("--combine", nargs="+", metavar="SUITE_JSON",
                        help="run nothing: one table from these suite_*.json files (a later file's row replaces an "
                             "earlier one's) with the IQM of the normalized scores across them")
    parser.add_argument("--probe_job", help=argparse.SUPPRESS)
    parser.add_argument("--random_envs", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_job is None:
        if args.seeds < 1 or args.jobs < 1 or args.smooth < 1:
            parser.error("--seeds, --jobs and --smooth must be positive")
        if args.first_seed < 0:
            parser.error("--first_seed must be >= 0")
        if not args.budget_scale > 0:
            parser.error("--budget_scale must be > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.probe_job is not None:
        return probe_job(args.probe_job.split(","), set(filter(None, args.random_envs.split(","))))
    if args.combine:
        print(combine(args.combine)[2])
        return 0
    env_ids = [e.strip() for e in args.envs.split(",") if e.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    logroot = os.path.abspath(args.logroot)
    started = datetime.datetime.now(datetime.timezone.utc)
    stem = f"suite_{started:%Y-%m-%d}" + (f"_scale{args.budget_scale:g}" if args.budget_scale != 1 else "")
    os.makedirs(args.output, exist_ok=True)
    json_path, png_path = (os.path.join(args.output, stem + ext) for ext in (".json", ".png"))

    probes = probe(env_ids, cached_random(args.output))
    budgets = {env_id: budget_of(env_id) for env_id in env_ids}
    jobs, plan = [], []
    for env_id in env_ids:
        budget, _ = budgets[env_id]
        if probes[env_id]["status"] != "ok" or budget is None:
            continue
        target = scaled(budget, args.budget_scale)
        # The runner takes the budget from the flagfile itself: --total_timesteps only when it must differ.
        from_flagfile = args.budget_scale == 1 and budgets[env_id][1].endswith(".flags")
        for seed in seeds:
            logdir = run_dir(logroot, env_id, seed)
            state, reason = run_state(logdir, target, args.backend)
            plan.append(state)
            if state in ("new", "resume"):
                jobs.append(Job(env_id, seed, logdir, state == "resume", None if from_flagfile else target))
            elif state == "conflict":
                print(f"not run: {logdir} {reason}", file=sys.stderr)
    counts = collections.Counter(plan)
    print(f"{len(env_ids)} envs x {len(seeds)} seeds on {args.backend}: {counts['finished']} finished, "
          f"{counts['resume']} to resume, {counts['new']} to start, {counts['conflict']} in conflict, "
          f"{sum(p['status'] != 'ok' for p in probes.values())} env(s) skipped or not made"
          + ("; --report: running nothing" if args.report else ""), file=sys.stderr, flush=True)
    completed = True
    if jobs and not args.report:
        completed = run_all(jobs, args)

    suite = {"date": started.isoformat(timespec="seconds"),
             "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "backend": args.backend, "seeds": seeds, "budget_scale": args.budget_scale, "logroot": logroot,
             "envs": env_ids, "argv": sys.argv[1:] if argv is None else list(argv), "completed": completed,
             "zoo_source": ZOO_SOURCE,
             "final_score": "metrics.json latest.mean_return: the latest policy's final evaluation",
             "iqm": "mean of the middle 50% of the per-seed final scores (fractional weights at the quartiles)",
             "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": CI_LEVEL,
                           "method": "percentile, resampling seeds with replacement"},
             "random_policy": {"episodes": RANDOM_EPISODES,
                               "protocol": "episode i: env.reset(seed=i), action_space.seed(i), "
                                           "action_space.sample()"}}
    rows = []
    for env_id in env_ids:
        budget, source = budgets[env_id]
        runs = []
        if probes[env_id]["status"] == "ok" and budget is not None:
            target = scaled(budget, args.budget_scale)
            runs = [collect_run(env_id, seed, run_dir(logroot, env_id, seed), target, args.backend) for seed in seeds]
        rows.append(summarize(env_id, runs, None if budget is None else scaled(budget, args.budget_scale),
                              source, probes[env_id], seeds))
        rows[-1]["full_budget"] = budget
    info = harness.machine()
    table = markdown_table(rows, suite, info)
    random_records = {e: p["random"] for e, p in probes.items() if "random" in p}
    harness.write_json(json_path, {"suite": suite, "machine": info, "random": random_records, "envs": rows,
                                   "table": table})
    print(table)
    figure(rows, suite, png_path, args.smooth)
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if completed else 130


if __name__ == "__main__":
    sys.exit(main())
