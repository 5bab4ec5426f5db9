"""Hyperparameter tuning benchmark: an Optuna study (`unstable_ppo.tune`) against the RL Zoo's settings, same budget.

1. A `--trials`-trial study on `--env` (default LunarLander-v3) at a reduced budget (`--budget` env steps a trial),
   from the Zoo's PPO settings for LunarLander (the base of every trial), searching the Zoo's PPO space with
   batch_size >= 32 and n_steps <= 1024 (smaller minibatches of 16k-step rollouts take minutes an update on
   2 CPU cores), with `--n_jobs` workers.
2. The best trial's flagfile and the Zoo's settings, each trained afresh for the same budget on `--seeds` seeds
   that the study never used, and evaluated on 10 deterministic episodes (the runner's final report: `latest`).

    python benchmarks/tune.py                                   # LunarLander-v3, 20 trials of 49152 steps, jax
    python benchmarks/tune.py --env Acrobot-v1 --trials 10 --budget 20000

Writes benchmarks/results/tune_<date>.json (or --out): the study (every trial), both settings' returns per
seed, and the wall times. LunarLander needs gymnasium[box2d].
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import harness

# rl-baselines3-zoo hyperparams/ppo.yml, LunarLander-v2 (1M steps there), in our flags; the Zoo's learning rate is
# SB3's constant default.
ZOO_LUNARLANDER = ["--num_envs=16", "--num_steps=1024", "--batch_size=64", "--gae_lambda=0.98", "--gamma=0.999",
                   "--num_epochs=4", "--ent_coef=0.01", "--lr=0.0003", "--noanneal_lr", "--clip_range=0.2",
                   "--vf_coef=0.5", "--max_grad_norm=0.5"]
SPACE = {"batch_size": [32, 64, 128, 256, 512], "num_steps": [32, 64, 128, 256, 512, 1024]}  # else the Zoo's


def run(argv, backend, log):
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", *argv], env=harness.job_env(backend), stdout=f,
                              stderr=subprocess.STDOUT, cwd=harness.ROOT)
    return proc.returncode, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="LunarLander-v3")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget", type=int, default=49152)
    parser.add_argument("--n_jobs", type=int, default=2)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--workdir", default=None, help="study and runs (default: a new temporary directory)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="unstable_ppo_tune_bench_"))
    os.makedirs(work, exist_ok=True)
    info = harness.machine()
    print(harness.machine_line(info), flush=True)
    space_file = os.path.join(work, "space.json")
    with open(space_file, "w") as f:
        json.dump(SPACE, f)
    cache = ["--compilation_cache_dir=" + os.path.join(work, "xla_cache")] if args.backend == "jax" else []
    study_dir = os.path.join(work, "study")
    tune_argv = ["unstable_ppo.tune", f"--env_id={args.env}", f"--backend={args.backend}", *ZOO_LUNARLANDER, *cache,
                 f"--n_trials={args.trials}", f"--budget={args.budget}", f"--n_jobs={args.n_jobs}",
                 f"--search_space={space_file}", f"--study_dir={study_dir}", "--n_evaluations=3", "--eval_episodes=5"]
    print(f"tuning: {' '.join(tune_argv)}", flush=True)
    code, tune_wall = run(tune_argv, args.backend, os.path.join(work, "tune.log"))
    print(f"tuning: exit {code} in {tune_wall:.0f} s (log: {os.path.join(work, 'tune.log')})", flush=True)
    with open(os.path.join(study_dir, "trials.json")) as f:
        study = json.load(f)
    best_flags = os.path.join(study_dir, "best.flags")
    variants = {"zoo": [f"--env_id={args.env}", *ZOO_LUNARLANDER, f"--total_timesteps={args.budget}"],
                "tuned": [f"--flagfile={best_flags}"]}
    results = {}
    for name, flags in variants.items():
        results[name] = []
        for seed in args.seeds:
            logdir = os.path.join(work, "runs", name, str(seed))
            code, wall = run(["unstable_ppo.run", *flags, f"--seed={seed}", f"--logdir={logdir}", "--eval_episodes=10",
                              "--eval_interval=0", "--verbose=0", f"--backend={args.backend}", *cache,
                              f"--total_timesteps={args.budget}"], args.backend,
                             os.path.join(work, f"{name}_{seed}.log"))
            row = {"seed": seed, "exit": code, "wall_s": round(wall, 1)}
            if code == 0:
                with open(os.path.join(logdir, "metrics.json")) as f:
                    metrics = json.load(f)
                row.update(mean_return=metrics["latest"]["mean_return"], std_return=metrics["latest"]["std_return"],
                           steps=metrics["total_timesteps"])
            results[name].append(row)
            print(f"{name} seed {seed}: {row}", flush=True)
    summary = {}
    for name, rows in results.items():
        returns = [r["mean_return"] for r in rows if "mean_return" in r]
        summary[name] = {"mean": round(statistics.mean(returns), 1) if returns else None,
                         "std": round(statistics.stdev(returns), 1) if len(returns) > 1 else None,
                         "returns": returns, "wall_s": round(sum(r["wall_s"] for r in rows), 1)}
    states = {}
    for t in study["trials"]:
        states[t["state"]] = states.get(t["state"], 0) + 1
    complete = [t for t in study["trials"] if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"tune_{info['date'][:10]}.json")
    harness.write_json(out, {
        "machine": info, "env_id": args.env, "budget": args.budget, "trials": args.trials, "n_jobs": args.n_jobs,
        "backend": args.backend, "seeds": args.seeds, "zoo_flags": ZOO_LUNARLANDER, "space_changes": SPACE,
        "tune_command": tune_argv, "tune_wall_s": round(tune_wall, 1), "trial_states": states,
        "best_trial": best and {k: best[k] for k in ("number", "value", "params")},
        "best_flags": open(best_flags).read().splitlines() if os.path.exists(best_flags) else None,
        "results": results, "summary": summary, "study": study})
    print(json.dumps(summary), flush=True)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
