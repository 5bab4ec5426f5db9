"""Dict observations (issue 21): unstable_ppo against Stable-Baselines3 PPO on MiniGrid DoorKey and PointMaze.

Same settings, budget and seeds for both libraries, taken from the examples (their SETTINGS):
- `minigrid`: MiniGrid-DoorKey-5x5 without the mission text (examples/minigrid_doorkey.py),
  rl-starter-files' PPO defaults for MiniGrid: 16 envs x 128 steps, 4 epochs, minibatch 256,
  lr 1e-3 constant, gamma 0.99, GAE 0.95, clip 0.2, entropy 0.01, vf 0.5, grad norm 0.5; 100k steps
  (its README trains DoorKey-5x5 in 80k frames). Encoder: ours `examples.encoders.MiniGridEncoder`
  (2x2 convs 16-32-64 with a max-pool, grid values as they are, plus the one-hot direction), SB3 the
  same net in torch (`MiniGridExtractor` below, `normalize_images=False`, shared by policy and value
  as SB3 does by default); then one 64-unit tanh layer each for policy and value.
- `pointmaze`: PointMaze_UMazeDense-v3 (examples/pointmaze.py), the built-in Dict encoders (SB3:
  `MultiInputPolicy`'s CombinedExtractor), SB3's PPO defaults, i.e. the PPO paper's MuJoCo settings
  (2048 steps per update as 8 envs x 256 steps, 10 epochs, minibatch 64, lr 3e-4 constant, gamma 0.99,
  GAE 0.95, clip 0.2, no entropy bonus, 64-64 tanh); 200k steps.
Both use Adam with each library's own epsilon (1e-5 in both) and orthogonal initialization.

Each job runs in a fresh interpreter; for each env and seed the runners follow each other. Only
`learn` is timed; then 10 deterministic episodes are played on a fresh env seeded seed + 10000.
The table gives, per env and runner, the mean ± std over seeds of the final evaluation's mean return,
each seed's, steps/s and the learn wall time.

    python benchmarks/dict_obs.py                                  # both envs, seeds 0 1 2, sb3 and jax
    python benchmarks/dict_obs.py --envs minigrid --runners sb3 jax torch
    python benchmarks/dict_obs.py --timesteps 4096 --seeds 0 --json /tmp/smoke.json   # a smoke run
    OMP_NUM_THREADS=1 python benchmarks/dict_obs.py                # on a shared machine

Threads are left at each library's defaults. On a machine that other jobs load, set OMP_NUM_THREADS=1:
with torch's two default threads, SB3's PointMaze update ran 66x slower (58 against 3839 steps/s on
2 loaded cores, 2026-12-02); the JSON records the variable.

Needs `pip install -e ".[jax,minigrid,robotics,benchmarks]"`. Results go to
benchmarks/results/dict_obs_<date>.json (`--json` to choose), rewritten after every job.
"""

import argparse
import datetime
import importlib
import json
import os
import sys
import time

import harness

ENVS = {  # name: (module with SETTINGS, env id as both libraries make it, default budget)
    "minigrid": ("examples.minigrid_doorkey", "examples.minigrid_doorkey:MiniGrid-DoorKey-5x5-NoMission-v0", 100_000),
    "pointmaze": ("examples.pointmaze", "gymnasium_robotics:PointMaze_UMazeDense-v3", 200_000),
}
RUNNERS = ["sb3", *harness.keras_backends(("jax", "tensorflow", "torch"))]
EVAL_EPISODES = 10
FILTERS = 16  # the MiniGrid encoder's first conv width, in both libraries


def settings(env):
    """The example's PPO settings for `env` (importing it registers its env id)."""
    if harness.ROOT not in sys.path:
        sys.path.append(harness.ROOT)
    return dict(importlib.import_module(ENVS[env][0]).SETTINGS)


def minigrid_extractor():
    """SB3's twin of examples.encoders.MiniGridEncoder, in torch (SB3 hands it the grid channels-first)."""
    import torch
    from torch import nn
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class MiniGridExtractor(BaseFeaturesExtractor):
        def __init__(self, observation_space, filters=FILTERS):
            image = observation_space["image"]
            conv = nn.Sequential(nn.Conv2d(image.shape[0], filters, 2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(filters, 2 * filters, 2), nn.ReLU(),
                                 nn.Conv2d(2 * filters, 4 * filters, 2), nn.ReLU(), nn.Flatten())
            with torch.no_grad():
                size = conv(torch.zeros(1, *image.shape)).shape[1]
            super().__init__(observation_space, size + observation_space["direction"].n)
            self.conv = conv

        def forward(self, obs):  # SB3 has one-hot encoded the direction already, as (batch, 1, 4)
            direction = obs["direction"].float().reshape(len(obs["direction"]), -1)
            return torch.cat([self.conv(obs["image"].float()), direction], dim=1)

    return MiniGridExtractor


def run_job(runner, env, seed, timesteps):
    """Train and evaluate one runner on one env in this process; print one JSON line."""
    HP = settings(env)
    env_id = ENVS[env][1]
    if runner == "sb3":
        import gymnasium as gym
        from torch import nn
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        sizes = list(HP["hidden_sizes"])
        policy_kwargs = dict(net_arch=dict(pi=sizes, vf=sizes), activation_fn=nn.Tanh)
        if env == "minigrid":
            policy_kwargs.update(features_extractor_class=minigrid_extractor(), normalize_images=False,
                                 features_extractor_kwargs=dict(filters=FILTERS))
        assert not HP["anneal_lr"]
        model = PPO("MultiInputPolicy", make_vec_env(env_id, n_envs=HP["num_envs"], seed=seed, vec_env_cls=DummyVecEnv),
                    learning_rate=HP["lr"], n_steps=HP["num_steps"], batch_size=HP["batch_size"],
                    n_epochs=HP["num_epochs"], gamma=HP["gamma"], gae_lambda=HP["gae_lambda"],
                    clip_range=HP["clip_range"], ent_coef=HP["ent_coef"], vf_coef=HP["vf_coef"],
                    max_grad_norm=HP["max_grad_norm"], policy_kwargs=policy_kwargs, seed=seed, device="cpu",
                    verbose=0)
        start = time.perf_counter()
        model.learn(timesteps)
        seconds = time.perf_counter() - start
        eval_env = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
        eval_env.seed(seed + 10_000)
        returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True,
                                     return_episode_rewards=True)
        steps, params = model.num_timesteps, sum(p.numel() for p in model.policy.parameters())
    else:
        assert os.environ.get("KERAS_BACKEND") == runner, "run through the parent, which sets KERAS_BACKEND"
        from unstable_ppo import PPO

        extra = {}
        if env == "minigrid":
            from examples.encoders import MiniGridEncoder

            extra["encoder"] = MiniGridEncoder(filters=FILTERS)
        model = PPO(env_id, seed=seed, **HP, **extra)
        start = time.perf_counter()
        model.learn(timesteps)
        seconds = time.perf_counter() - start
        returns = model.evaluate(n_episodes=EVAL_EPISODES, deterministic=True, seed=seed + 10_000)["returns"]
        steps, params = model.num_timesteps, model.model.count_params()
    returns = [float(r) for r in returns]
    print(json.dumps(dict(runner=runner, env=env, seed=seed, timesteps=int(steps), learn_s=seconds,
                          steps_per_second=steps / seconds, eval_mean=sum(returns) / len(returns),
                          eval_returns=returns, params=int(params))), flush=True)


def mean_std(xs):
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5


def table(results, envs, runners):
    rows = ["| env | runner | eval return, mean ± std over seeds | per seed | steps/s | learn wall time (s) "
            "| params |",
            "|---|---|---|---|---|---|---|"]
    for env in envs:
        for runner in runners:
            rs = sorted((r for r in results if r["env"] == env and r["runner"] == runner), key=lambda r: r["seed"])
            if not rs:
                rows.append(f"| {env} | {runner} | failed | | | | |")
                continue
            m, s = mean_std([r["eval_mean"] for r in rs])
            seeds = ", ".join(f"{r['seed']}: {r['eval_mean']:.3g}" for r in rs)
            sps, wall = mean_std([r["steps_per_second"] for r in rs]), mean_std([r["learn_s"] for r in rs])
            rows.append(f"| {env} | {runner} | {m:.3g} ± {s:.2g} | {seeds} | {sps[0]:.0f} ± {sps[1]:.0f} "
                        f"| {wall[0]:.0f} ± {wall[1]:.0f} | {rs[0]['params']} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--runners", nargs="+", default=["sb3", "jax"], choices=RUNNERS, metavar="RUNNER",
                        help=f"from {' '.join(RUNNERS)} (default: sb3 jax)")
    parser.add_argument("--timesteps", type=int, help="training steps per job (default: minigrid 100000, "
                        "pointmaze 200000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--json", metavar="OUT", default=os.path.join(
        harness.ROOT, "benchmarks", "results", f"dict_obs_{datetime.date.today().isoformat()}.json"),
        help="where to write the machine and all raw results (default: benchmarks/results/dict_obs_DATE.json)")
    parser.add_argument("--job", nargs=2, metavar=("RUNNER", "ENV"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.job:
        runner, env = args.job
        return run_job(runner, env, args.seeds[0], args.timesteps or ENVS[env][2])

    def spawn(job):
        env, seed, runner = job
        argv = ["--job", runner, env, "--seeds", seed, "--timesteps", args.timesteps or ENVS[env][2]]
        return harness.spawn(__file__, [str(a) for a in argv], backend=None if runner == "sb3" else runner)

    def write(results, failures, complete):
        info = harness.machine((*harness.PACKAGES, "minigrid", "gymnasium-robotics", "mujoco"))
        harness.write_json(args.json, dict(machine=info, args={k: v for k, v in vars(args).items() if k != "job"},
                                           settings={env: settings(env) for env in args.envs},
                                           complete=complete, results=results, failures=failures))
        return info

    jobs = [(env, seed, runner) for env in args.envs for seed in args.seeds for runner in args.runners]
    results, failures = harness.run_jobs(
        jobs, spawn, name=lambda job, result: f"{job[0]} {job[2]} seed {job[1]}",
        summary=lambda r: f"{r['steps_per_second']:.0f} steps/s, eval {r['eval_mean']:.3g}",
        on_result=lambda results, failures: write(results, failures, complete=False))
    info = write(results, failures, complete=True)
    print(f"\n## Dict observations, seeds {' '.join(map(str, args.seeds))}, "
          f"{args.timesteps or ', '.join(f'{e} {ENVS[e][2]}' for e in args.envs)} steps\n")
    print(table(results, args.envs, args.runners))
    print("\n" + harness.machine_line(info) + f" · results: {args.json}")
    if failures:
        print("\nfailed jobs: " + ", ".join(f"{e} {r} seed {s}" for e, s, r in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
