"""CartPole-v1 benchmark: unstable_ppo on each Keras backend against Stable-Baselines3 PPO.

Same PPO settings everywhere. `--settings issue` (the default): 8 envs x 128 steps, 4 epochs,
minibatch 256, lr 2.5e-4 constant (`--anneal_lr` anneals it to 0 in both), gamma 0.99, GAE 0.95,
clip 0.2 (Stable-Baselines3's defaults), no entropy bonus, vf_coef 0.5, max_grad_norm 0.5,
64-64 tanh actor and critic. `--settings zoo`: the settings of the bundled flagfile
`unstable_ppo/configs/CartPole-v1.flags` (rl-baselines3-zoo's: 8 envs x 32 steps, 20 epochs,
minibatch 256, lr 1e-3 and clip 0.2 both annealed linearly to 0, gamma 0.98, GAE 0.8), read
from the file, for both libraries. The runner `sb3_zoo` always anneals the clip range, as the
zoo does; with the flagfile's settings it is the same as `sb3` (it predates
`anneal_clip_range`, when `sb3` kept the clip range constant like unstable_ppo). Every job runs in a fresh subprocess
(the Keras backend is fixed at import), and for each seed the runners follow each other
(sb3, tensorflow, jax, torch) so that drift on a shared machine hits them alike. Only
`learn` is timed; then 10 deterministic episodes are played on a fresh env.
Thread settings (torch, jax, tf, OpenBLAS, OMP) are left at their defaults.

    python benchmarks/cartpole.py                      # 100k steps, seeds 0 1 2, all runners
    python benchmarks/cartpole.py --timesteps 8192 --seeds 0 --backends sb3 jax
    python benchmarks/cartpole.py --settings zoo       # the bundled flagfile's settings
    python benchmarks/cartpole.py --baseline ../main   # also each backend on another checkout's code
    python benchmarks/cartpole.py --compilation_cache_dir /tmp/xla  # JAX from a warm compilation cache

Jobs import unstable_ppo from this checkout (PYTHONPATH is set to it), not from wherever
`pip install -e` points; `--baseline DIR` adds, for each Keras backend, a runner `BACKEND@base`
that imports it from DIR (another checkout's root, e.g. `git worktree add /tmp/base main`), run
right before its peer with the same seed, for before/after comparisons: this script and its
settings stay this checkout's, only the library code differs. A second table then sets each
backend's steps/s on the baseline beside this checkout's, with their ratio per seed (× baseline)
and whether the evaluation returns matched.
`--compilation_cache_dir DIR` runs the `jax` jobs with XLA's persistent compilation cache in
DIR, after one unmeasured short jax job that fills it: what a second run of the same settings
costs.
"""

import argparse
import json
import os
import sys
import time

import harness

ENV_ID = "CartPole-v1"
FLAGFILE = harness.flagfile(ENV_ID)
HP_ISSUE = dict(num_envs=8, num_steps=128, num_epochs=4, batch_size=256, lr=2.5e-4, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
# Flagfile entries that are not PPO settings (the runner's budget, evaluation and saving).
NOT_PPO_FLAGS = {"total_timesteps", "eval_interval", "save_interval"}
KERAS_BACKENDS = harness.keras_backends(("tensorflow", "jax", "torch"))
RUNNERS = ["sb3", "sb3_zoo", *KERAS_BACKENDS]
EVAL_EPISODES = 10
SOLVED = 475.0


def zoo_settings(path=FLAGFILE):
    """(PPO settings, anneal_lr) from the bundled flagfile, with the issue settings' defaults for the rest."""
    hp, anneal_lr = dict(HP_ISSUE), False
    for name, value in harness.read_flagfile(path).items():
        if name in NOT_PPO_FLAGS:
            continue
        if name == "anneal_lr":
            anneal_lr = value.lower() in ("true", "1")
        elif name == "anneal_clip_range":
            hp[name] = value.lower() in ("true", "1")
        elif name not in hp:
            raise ValueError(f"{path}: --{name} is not a setting this benchmark passes to both libraries")
        else:
            hp[name] = type(hp[name])(value)
    return hp, anneal_lr


def settings(args):
    """(PPO settings, anneal_lr) for `--settings`."""
    if args.settings == "zoo":
        return zoo_settings()
    return dict(HP_ISSUE), args.anneal_lr


def run_job(runner, seed, timesteps, HP, anneal_lr, cache_dir=None):
    """Train and evaluate one runner in this process; print one JSON line."""
    if runner in ("sb3", "sb3_zoo"):
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv
        import gymnasium as gym

        lr, clip = HP["lr"], HP["clip_range"]
        model = PPO(
            "MlpPolicy", make_vec_env(ENV_ID, n_envs=HP["num_envs"], seed=seed, vec_env_cls=DummyVecEnv),
            learning_rate=(lambda progress: lr * progress) if anneal_lr else lr,
            n_steps=HP["num_steps"], batch_size=HP["batch_size"], n_epochs=HP["num_epochs"],
            gamma=HP["gamma"], gae_lambda=HP["gae_lambda"],
            clip_range=(lambda progress: clip * progress) if runner == "sb3_zoo" or HP.get("anneal_clip_range")
            else clip,
            ent_coef=HP["ent_coef"], vf_coef=HP["vf_coef"], max_grad_norm=HP["max_grad_norm"],
            seed=seed, device="cpu", verbose=0,
        )
        clock = harness.sb3_clock()
        start = time.perf_counter()
        model.learn(timesteps, callback=clock)
        seconds = time.perf_counter() - start
        # The first rollout+update ends when the second rollout starts, as the Keras runs' first_update_s.
        extra = {"first_update_s": clock.starts[1] - start} if len(clock.starts) > 1 else {}
        eval_env = DummyVecEnv([lambda: Monitor(gym.make(ENV_ID))])
        eval_env.seed(seed + 10_000)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
        steps = model.num_timesteps
    else:
        assert os.environ.get("KERAS_BACKEND") == runner.split("@")[0], "run through the parent, which sets KERAS_BACKEND"
        import unstable_ppo
        from unstable_ppo import PPO

        extra_code = {"code": os.path.dirname(os.path.dirname(os.path.abspath(unstable_ppo.__file__)))}
        if cache_dir and runner == "jax":
            unstable_ppo.use_compilation_cache(cache_dir)
            extra_code["compilation_cache_dir"] = cache_dir

        model = PPO(ENV_ID, seed=seed, anneal_lr=anneal_lr, **HP)
        split = {"rollout_s": 0.0, "update_s": 0.0}

        def add_times(ppo, logs):
            split["rollout_s"] += logs["rollout_time"]
            split["update_s"] += logs["update_time"]
            if ppo.num_updates == 1:  # includes compiling the acting and update functions
                split["first_update_s"] = time.perf_counter() - start

        from unstable_ppo.callbacks import LambdaCallback

        start = time.perf_counter()
        model.learn(timesteps, callbacks=[LambdaCallback(on_update_end=lambda update, logs: add_times(model, logs))])
        seconds = time.perf_counter() - start
        result = model.evaluate(n_episodes=EVAL_EPISODES, deterministic=True)
        mean, std = result["mean_return"], result["std_return"]
        steps, extra = model.num_timesteps, {**split, **extra_code}
    print(json.dumps(dict(runner=runner, seed=seed, timesteps=int(steps), learn_s=seconds,
                          steps_per_second=steps / seconds, eval_mean=float(mean),
                          eval_std=float(std), **extra)), flush=True)


def spawn(runner, seed, args, timesteps=None):
    """Run one job in a fresh interpreter; returns (result dict or None, stderr)."""
    backend, _, base = runner.partition("@")
    argv = ["--job", runner, "--seeds", seed, "--timesteps", timesteps or args.timesteps, "--settings", args.settings,
            "--anneal_lr" if args.anneal_lr else "--no-anneal_lr"]
    if args.compilation_cache_dir:
        argv += ["--compilation_cache_dir", args.compilation_cache_dir]
    return harness.spawn(__file__, argv, backend=None if backend.startswith("sb3") else backend,
                         code=args.baseline if base else harness.ROOT)


def steady(result, HP):
    """Steps/s after the first rollout+update, i.e. without one-off compilation."""
    rollout = HP["num_envs"] * HP["num_steps"]
    return (result["timesteps"] - rollout) / (result["learn_s"] - result["first_update_s"])


def table(results, runners, HP):
    sb3 = {r["seed"]: r["steps_per_second"] for r in results if r["runner"] == "sb3"}
    sb3_steady = {r["seed"]: steady(r, HP) for r in results if r["runner"] == "sb3"}
    rows = ["| runner | steps/s mean (min–max) | × SB3 | after the 1st update: steps/s, × SB3 "
            "| eval return per seed | all ≥ 475 |",
            "|---|---|---|---|---|---|"]
    for runner in runners:
        rs = sorted((r for r in results if r["runner"] == runner), key=lambda r: r["seed"])
        if not rs:
            rows.append(f"| {runner} | failed | | | | |")
            continue
        sps = [r["steps_per_second"] for r in rs]
        ratios = [r["steps_per_second"] / sb3[r["seed"]] for r in rs if r["seed"] in sb3]
        ratio = f"{sum(ratios) / len(ratios):.2f}" if ratios else "—"
        evals = ", ".join(f"{r['seed']}: {r['eval_mean']:.1f} ± {r['eval_std']:.1f}" for r in rs)
        solved = "yes" if all(r["eval_mean"] >= SOLVED for r in rs) else "no"
        warm = [steady(r, HP) for r in rs]
        warm_ratios = [steady(r, HP) / sb3_steady[r["seed"]] for r in rs if r["seed"] in sb3_steady]
        warm_ratio = f"{sum(warm_ratios) / len(warm_ratios):.2f}" if warm_ratios else "—"
        rows.append(f"| {runner} | {sum(sps) / len(sps):.0f} ({min(sps):.0f}–{max(sps):.0f}) "
                    f"| {ratio} | {sum(warm) / len(warm):.0f}, {warm_ratio} | {evals} | {solved} |")
    return "\n".join(rows)


def baseline_table(results, runners, HP):
    """Each Keras backend on this checkout's code against the same backend on --baseline's, seed by seed.

    The two jobs of a seed ran one after the other, so the ratios are the figures to read; "same
    returns" says whether every seed's evaluation matched to the last digit, as it does when a change
    leaves the maths alone.
    """
    rows = ["| backend | steps/s: baseline → this | × baseline | after the 1st update: baseline → this, × baseline "
            "| eval return per seed: baseline → this | same returns |",
            "|---|---|---|---|---|---|"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for runner in runners:
        if not runner.endswith("@base"):
            continue
        backend = runner.partition("@")[0]
        base = {r["seed"]: r for r in results if r["runner"] == runner}
        this = {r["seed"]: r for r in results if r["runner"] == backend}
        seeds = sorted(set(base) & set(this))
        if not seeds:
            rows.append(f"| {backend} | failed | | | | |")
            continue
        b, t = [base[s] for s in seeds], [this[s] for s in seeds]
        ratio = mean([y["steps_per_second"] / x["steps_per_second"] for x, y in zip(b, t)])
        warm_ratio = mean([steady(y, HP) / steady(x, HP) for x, y in zip(b, t)])
        evals = ", ".join(f"{s}: {x['eval_mean']:.1f} → {y['eval_mean']:.1f}" for s, x, y in zip(seeds, b, t))
        same = all((x["eval_mean"], x["eval_std"]) == (y["eval_mean"], y["eval_std"]) for x, y in zip(b, t))
        rows.append(f"| {backend} | {mean([x['steps_per_second'] for x in b]):.0f} → "
                    f"{mean([y['steps_per_second'] for y in t]):.0f} | {ratio:.2f} "
                    f"| {mean([steady(x, HP) for x in b]):.0f} → {mean([steady(y, HP) for y in t]):.0f}, "
                    f"{warm_ratio:.2f} | {evals} | {'yes' if same else 'no'} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="training steps per job (default 100000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--backends", nargs="+", default=None, choices=RUNNERS, metavar="RUNNER",
                        help=f"runners to benchmark, from {' '.join(RUNNERS)} (default: all; sb3_zoo only "
                             "with --settings zoo)")
    parser.add_argument("--settings", choices=("issue", "zoo"), default="issue",
                        help="issue: the fixed settings of issue #3 (default); zoo: the bundled flagfile's")
    parser.add_argument("--anneal_lr", action=argparse.BooleanOptionalAction, default=False,
                        help="issue settings: anneal the learning rate linearly to 0, for both libraries "
                             "(default: off; the zoo settings take it from the flagfile)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run each Keras backend on the unstable_ppo code in DIR (runners BACKEND@base)")
    parser.add_argument("--compilation_cache_dir", metavar="DIR",
                        help="run the jax jobs with XLA's persistent compilation cache in DIR, filled first "
                             "by one unmeasured short jax job")
    parser.add_argument("--json", metavar="OUT", help="write the machine and all raw results to OUT")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one job in this process
    args = parser.parse_args()
    HP, anneal_lr = settings(args)
    if args.job:
        return run_job(args.job, args.seeds[0], args.timesteps, HP, anneal_lr, args.compilation_cache_dir)

    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "unstable_ppo")):
        parser.error(f"--baseline {args.baseline}: no unstable_ppo/ there (it takes a checkout's root)")
    default = ["sb3", "sb3_zoo", *KERAS_BACKENDS] if args.settings == "zoo" else ["sb3", *KERAS_BACKENDS]
    chosen = args.backends if args.backends is not None else default
    runners = []
    for r in RUNNERS:
        if r in chosen:
            if args.baseline and r in KERAS_BACKENDS:
                runners.append(f"{r}@base")
            runners.append(r)
    jobs = [(r, s) for s in args.seeds for r in runners]
    if args.compilation_cache_dir and "jax" in runners:
        result, stderr = spawn("jax", args.seeds[0], args, timesteps=2 * HP["num_envs"] * HP["num_steps"])
        if result is None:
            print(f"filling the compilation cache failed:\n{stderr[-2000:]}", file=sys.stderr)
            return 1
    results, failures = harness.run_jobs(
        jobs, lambda job: spawn(*job, args), name=lambda job, result: f"{job[0]} seed {job[1]}",
        summary=lambda r: f"{r['steps_per_second']:.0f} steps/s, eval {r['eval_mean']:.1f} ± {r['eval_std']:.1f}",
        on_result=lambda results, failures: write_json(args, HP, anneal_lr, results, failures, complete=False))

    info = write_json(args, HP, anneal_lr, results, failures, complete=True)
    print(f"\n## CartPole-v1, {args.timesteps} steps, seeds {' '.join(map(str, args.seeds))}, "
          f"settings {args.settings}: {HP}, anneal_lr={anneal_lr}\n")
    print(table(results, runners, HP))
    if args.baseline:
        print(f"\n### This checkout ({harness.ROOT}) against the baseline ({os.path.abspath(args.baseline)})\n")
        print(baseline_table(results, runners, HP))
    print("\n" + harness.machine_line(info)
          + f" · threads: library defaults, env {info['thread_env'] or 'unset'}"
          + (f" · jax from a warm compilation cache ({args.compilation_cache_dir})" if args.compilation_cache_dir
             else ""))
    if failures:
        print("\nfailed jobs: " + ", ".join(f"{r} seed {s}" for r, s in failures))
    return 1 if failures else 0


def write_json(args, HP, anneal_lr, results, failures, complete):
    """The machine and the results so far to `--json` (after every job: a stopped run keeps them)."""
    info = harness.machine()
    if args.json:
        harness.write_json(args.json, dict(machine=info, args={k: v for k, v in vars(args).items() if k != "job"},
                                           hyperparameters=dict(HP, anneal_lr=anneal_lr), complete=complete,
                                           results=results, failures=failures))
    return info

if __name__ == "__main__":
    sys.exit(main())
