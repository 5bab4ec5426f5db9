"""Stable-Baselines3 PPO with a bundled flagfile's settings: the suite's peer run (issue 18).

When our run of an env falls short of the RL Zoo's published figure, the question is whether the
Zoo's settings fail here for both implementations, or ours differs. This script answers it: SB3 PPO
with exactly the settings of `unstable_ppo/configs/ENV.flags` (read by the runner's own parser, so the
two cannot drift apart), on the same env version, budget and seeds, evaluated as `benchmarks/suite.py`
evaluates ours: 10 deterministic episodes on an env seeded seed + 10000, observation statistics frozen,
returns in the env's own reward scale.

Translated: num_envs, num_steps, batch_size, num_epochs, lr (constant, or linear to 0 with
anneal_lr), gamma, gae_lambda, clip_range (annealed with anneal_clip_range), ent_coef, vf_coef,
max_grad_norm, hidden_sizes (separate pi/vf nets), activation, log_std_init, ortho_init, use_sde,
sde_sample_freq, normalize_obs/normalize_reward (VecNormalize, gamma from the flagfile), time_feature
(the same gymnasium TimeAwareObservation, as make_vec_env's wrapper_class), env_kwargs (make_vec_env's
env_kwargs), and the budget
(total_timesteps). A recurrent flagfile runs sb3-contrib's RecurrentPPO with MlpLstmPolicy:
hidden_layer_size is its lstm_hidden_size, shared_lstm=false its separate critic LSTM
(enable_critic_lstm), lstm_head_sizes its net_arch after the LSTM; hidden_sizes must be empty (its
LSTM reads the observation) and timestep_size has no counterpart (it trains on whole episode
segments of the rollout), which is the one known difference. A flag the script cannot translate
(the KL loss, ...) is an error rather than a silent difference.

    python benchmarks/sb3_suite.py --envs Hopper-v5 --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/sb3_suite.py --envs Swimmer-v5 --seeds 0 --json /tmp/sb3.json

Resumable: results go to --json (default benchmarks/results/sb3_suite_DATE.json) after every run,
and a (env, seed) already there is not run again.
"""

import argparse
import datetime
import functools
import json
import os
import sys
import time

import harness

TRANSLATED = {"num_envs", "num_steps", "batch_size", "num_epochs", "lr", "anneal_lr", "gamma", "gae_lambda",
              "clip_range", "anneal_clip_range", "ent_coef", "vf_coef", "max_grad_norm", "hidden_sizes",
              "activation", "log_std_init", "ortho_init", "use_sde", "sde_sample_freq", "normalize_obs",
              "normalize_reward", "time_feature", "env_kwargs", "total_timesteps", "eval_interval", "save_interval"}
RECURRENT = {"recurrent", "hidden_layer_size", "shared_lstm", "lstm_head_sizes", "timestep_size"}
EVAL_EPISODES = 10


def truthy(value):
    return str(value).lower() in ("true", "1", "yes")


def settings(env_id):
    """The flagfile's flags, with the translated defaults of the runner where it leaves them."""
    flags = harness.read_flagfile(harness.flagfile(env_id))
    unknown = set(flags) - TRANSLATED - (RECURRENT if truthy(flags.get("recurrent", "false")) else set())
    if truthy(flags.get("recurrent", "false")) and flags.get("hidden_sizes", "64,64").strip():  # the runner's default
        unknown.add("hidden_sizes (an MLP before the LSTM)")
    if unknown:
        raise SystemExit(f"error: {env_id}'s flagfile sets {sorted(unknown)}, which this script does not translate")
    return flags


def run(env_id, seed):
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    f = settings(env_id)
    recurrent = truthy(f.get("recurrent", "false"))
    get = lambda name, default, cast=float: cast(f[name]) if name in f else default  # noqa: E731
    n_envs, n_steps = get("num_envs", 8, int), get("num_steps", 128, int)
    lr = get("lr", 2.5e-4)
    clip = get("clip_range", 0.2)
    gamma = get("gamma", 0.99)
    sizes = [int(s) for s in (f.get("lstm_head_sizes", "") if recurrent else f.get("hidden_sizes", "64,64")).split(",")
             if s.strip()]  # the runner's defaults
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[f.get("activation", "tanh")]
    policy_kwargs = dict(net_arch=dict(pi=sizes, vf=sizes), activation_fn=activation,
                         ortho_init=truthy(f.get("ortho_init", "true")))
    algorithm, policy = PPO, "MlpPolicy"
    if recurrent:
        from sb3_contrib import RecurrentPPO

        algorithm, policy = RecurrentPPO, "MlpLstmPolicy"
        shared = truthy(f.get("shared_lstm", "true"))
        policy_kwargs.update(lstm_hidden_size=get("hidden_layer_size", 128, int), shared_lstm=shared,
                             enable_critic_lstm=not shared)
    env_kwargs = json.loads(f.get("env_kwargs", "{}"))
    is_box = isinstance(gym.make(env_id, **env_kwargs).action_space, gym.spaces.Box)
    if is_box:
        policy_kwargs["log_std_init"] = get("log_std_init", 0.0)
    wrapper = None
    if truthy(f.get("time_feature", "false")):
        from gymnasium.wrappers import TimeAwareObservation

        wrapper = functools.partial(TimeAwareObservation, flatten=True, normalize_time=True)
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=wrapper, env_kwargs=env_kwargs)
    norm_obs, norm_reward = truthy(f.get("normalize_obs", "false")), truthy(f.get("normalize_reward", "false"))
    if norm_obs or norm_reward:
        venv = VecNormalize(venv, norm_obs=norm_obs, norm_reward=norm_reward, gamma=gamma)
    model = algorithm(
        policy, venv, seed=seed, device="cpu", verbose=0, n_steps=n_steps, batch_size=get("batch_size", 256, int),
        n_epochs=get("num_epochs", 4, int), gamma=gamma, gae_lambda=get("gae_lambda", 0.95),
        learning_rate=(lambda p: lr * p) if truthy(f.get("anneal_lr", "true")) else lr,
        clip_range=(lambda p: clip * p) if truthy(f.get("anneal_clip_range", "false")) else clip,
        ent_coef=get("ent_coef", 0.0), vf_coef=get("vf_coef", 0.5), max_grad_norm=get("max_grad_norm", 0.5),
        use_sde=truthy(f.get("use_sde", "false")), sde_sample_freq=get("sde_sample_freq", -1, int),
        policy_kwargs=policy_kwargs,
    )
    budget = get("total_timesteps", 100_000, int)
    start = time.perf_counter()
    model.learn(budget)
    seconds = time.perf_counter() - start
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000, wrapper_class=wrapper, env_kwargs=env_kwargs)
    if isinstance(venv, VecNormalize):
        eval_env = VecNormalize(eval_env, norm_obs=norm_obs, norm_reward=False, gamma=gamma, training=False)
        eval_env.obs_rms = venv.obs_rms
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True,
                                 return_episode_rewards=True)
    return dict(env_id=env_id, seed=seed, budget=budget, learn_s=seconds, steps_per_second=budget / seconds,
                final_mean=float(sum(returns) / len(returns)), returns=[float(r) for r in returns], settings=f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=os.path.join(harness.ROOT, "benchmarks", "results",
                                                       f"sb3_suite_{datetime.date.today().isoformat()}.json"))
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)  # internal: ENV SEED, in a fresh process
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run(args.job[0], int(args.job[1]))), flush=True)
        return 0
    if not args.envs:
        parser.error("--envs is required")
    for env_id in args.envs:
        settings(env_id)  # an untranslatable flagfile fails before anything runs
    data = json.load(open(args.json)) if os.path.exists(args.json) else {"runs": []}
    done = {(r["env_id"], r["seed"]) for r in data["runs"]}
    jobs = [(e, s) for e in args.envs for s in args.seeds if (e, s) not in done]

    def record(results, failures):
        data["runs"] = [r for r in data["runs"] if (r["env_id"], r["seed"]) not in {(x["env_id"], x["seed"])
                                                                                  for x in results}] + results
        data["machine"] = harness.machine(("stable-baselines3", "sb3-contrib", "torch", "gymnasium", "mujoco"))
        data["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
        harness.write_json(args.json, data)

    results, failures = harness.run_jobs(
        jobs, lambda job: harness.spawn(__file__, ["--job", job[0], str(job[1])]),
        name=lambda job, result: f"SB3 {job[0]} seed {job[1]}",
        summary=lambda r: f"final {r['final_mean']:.1f} ({r['learn_s']:.0f} s)", on_result=record)
    record(results, failures)
    for env_id in args.envs:
        finals = [r["final_mean"] for r in data["runs"] if r["env_id"] == env_id]
        if finals:
            mean = sum(finals) / len(finals)
            std = (sum((x - mean) ** 2 for x in finals) / len(finals)) ** 0.5
            print(f"{env_id}: SB3 final {mean:.1f} ± {std:.1f} over {len(finals)} seed(s): "
                  + ", ".join(f"{x:.1f}" for x in finals))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
