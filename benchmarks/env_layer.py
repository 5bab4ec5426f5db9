"""What one vector step of 8 CartPole envs costs, layer by layer, and where collect_rollout spends it.

Part 1 (`layers`): the env stack from the bare physics up to what the rollout steps,
with gymnasium's `SyncVectorEnv` (the layout before `envs.SyncEnvs`) beside ours. Part 2
(`rollout`): `PPO.collect_rollout` on one Keras backend (8 envs x 128 steps), split into
`env.step`, the acting call and the rest (the rollout's own numpy work and GAE), with
either vector env, alternating rollout by rollout.

Every case runs in rounds, interleaved with the others, in one process. The figures are
µs per vector step: the main thread's CPU time (`time.thread_time`, little affected by
other processes on a shared machine) and wall time.

    python benchmarks/env_layer.py                       # both parts, JAX
    KERAS_BACKEND=tensorflow python benchmarks/env_layer.py --parts rollout
"""

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's code

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402

from unstable_ppo import envs as E  # noqa: E402
from unstable_ppo.faults import SupervisedVectorEnv, TagEnvErrors  # noqa: E402
from unstable_ppo.monitor import Monitor  # noqa: E402

ENV_ID, N = "CartPole-v1", 8


class Physics:
    """8 bare CartPoleEnv objects stepped in a Python loop: the floor."""

    def __init__(self):
        self.envs = [gym.make(ENV_ID).unwrapped for _ in range(N)]
        for i, env in enumerate(self.envs):
            env.reset(seed=i)

    def step(self, actions):
        for env, action in zip(self.envs, actions):
            if env.step(action)[2]:
                env.reset()


def gymnasium_vec(make_env):
    return gym.vector.SyncVectorEnv([make_env] * N, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)


def before_env(supervised=False):
    """make_vec_env's sync layout before SyncEnvs: gymnasium's SyncVectorEnv over TagEnvErrors(Monitor(env))."""
    def build(rebuilt=False):
        fns = [functools.partial(E._make_env, ENV_ID, i, {}, None, False, True, False, None, None, None)
               for i in range(N)]
        env = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
        env.spec, env.records_episodes = gym.spec(ENV_ID), True
        return env
    return SupervisedVectorEnv(build) if supervised else build()


def after_env(supervised=False):
    return E.make_vec_env(ENV_ID, N, max_env_restarts=10 if supervised else None)


def timed_rounds(cases, run, rounds):
    """{case: [(cpu µs, wall µs) per round]}, the cases interleaved round by round."""
    out = {k: [] for k in cases}
    for r in range(rounds):
        for name, case in cases.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            steps = run(case, r)
            out[name].append(((time.thread_time() - cpu) / steps * 1e6, (time.perf_counter() - wall) / steps * 1e6))
    return out


def layers(rounds, chunk=256):
    make = lambda: gym.make(ENV_ID)  # noqa: E731
    cases = {
        "physics: 8 bare CartPoleEnv.step calls": Physics(),
        "gymnasium SyncVectorEnv(gym.make)": gymnasium_vec(make),
        "gymnasium SyncVectorEnv(Monitor(gym.make))": gymnasium_vec(lambda: Monitor(make())),
        "before: gymnasium SyncVectorEnv(TagEnvErrors(Monitor(gym.make)))": before_env(),
        "before + SupervisedVectorEnv": before_env(True),
        "after: make_vec_env (SyncEnvs)": after_env(),
        "after + SupervisedVectorEnv": after_env(True),
    }
    for case in cases.values():
        if not isinstance(case, Physics):
            case.reset(seed=list(range(N)))
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, (chunk, N)) for _ in range(rounds)]

    def run(env, r):
        for a in actions[r]:
            env.step(a)
        return chunk

    return timed_rounds(cases, run, rounds)


def rollout(rounds):
    from unstable_ppo import PPO
    from unstable_ppo.buffer import RolloutBuffer

    ppo = PPO(ENV_ID, seed=0, num_envs=N, num_steps=128, num_epochs=4, batch_size=256)
    ppo.learn(N * 128 * 2)  # compiled, and a policy that is not the initial one
    T = ppo.hp.num_steps
    buffer = RolloutBuffer(T, N, ppo.observation_space.shape, ppo._obs_dtype(), *ppo._action_layout())
    cases = {"before": before_env(), "after": after_env(),
             "before + SupervisedVectorEnv": before_env(True), "after + SupervisedVectorEnv": after_env(True)}
    state = {}
    for name, env in cases.items():
        ppo.env = env
        ppo._reset()
        state[name] = (ppo._last_obs, ppo._last_done)
    clock = {"env": [0.0, 0.0], "act": [0.0, 0.0]}

    def timed(part, fn):
        def wrapper(*args):
            wall, cpu = time.perf_counter(), time.thread_time()
            out = fn(*args)
            clock[part][0] += time.thread_time() - cpu
            clock[part][1] += time.perf_counter() - wall
            return out
        return wrapper

    make_act = ppo.model.make_act_function
    ppo.model.make_act_function = lambda *a, **k: timed("act", make_act(*a, **k))
    split = {name: [] for name in cases}

    def run(name, r):
        env = cases[name]
        ppo.env, (ppo._last_obs, ppo._last_done) = env, state[name]
        env.step = timed("env", env.step)
        for c in clock.values():
            c[0] = c[1] = 0.0
        ppo.collect_rollout(buffer)
        del env.step
        state[name] = (ppo._last_obs, ppo._last_done)
        split[name].append({f"{part}_{kind}": c[i] / T * 1e6 for part, c in clock.items()
                            for i, kind in enumerate(("cpu", "wall"))})
        return T

    totals = timed_rounds({name: name for name in cases}, run, rounds)
    return {name: [dict(total_cpu=cpu, total_wall=wall, **parts, rest_cpu=cpu - parts["env_cpu"] - parts["act_cpu"],
                        rest_wall=wall - parts["env_wall"] - parts["act_wall"])
                   for (cpu, wall), parts in zip(totals[name], split[name])] for name in cases}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["layers", "rollout"], choices=["layers", "rollout"])
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the env-stack cases (256 steps each)")
    parser.add_argument("--rollouts", type=int, default=15, help="rollouts per case in the rollout part")
    parser.add_argument("--json", metavar="OUT", help="write the raw figures to OUT")
    args = parser.parse_args()
    from cartpole import machine

    out = {"machine": machine(), "args": vars(args)}
    if "layers" in args.parts:
        res = layers(args.rounds)
        out["layers"] = res
        print(f"\n## The env stack: µs per vector step of {N} envs ({args.rounds} rounds of 256 steps)\n")
        print("| stack | CPU min | CPU median | wall median |\n|---|---|---|---|")
        for name, v in res.items():
            v = np.array(v)
            print(f"| {name} | {v[:, 0].min():.1f} | {np.median(v[:, 0]):.1f} | {np.median(v[:, 1]):.1f} |")
    if "rollout" in args.parts:
        res = rollout(args.rollouts)
        out["rollout"] = res
        print(f"\n## collect_rollout on {os.environ.get('KERAS_BACKEND', 'the default backend')}: "
              f"µs per vector step, median of {args.rollouts} rollouts per case\n")
        keys = ["total_cpu", "env_cpu", "act_cpu", "rest_cpu", "total_wall", "env_wall", "act_wall", "rest_wall"]
        print("| vector env | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
        for name, rows in res.items():
            print(f"| {name} | " + " | ".join(f"{np.median([r[k] for r in rows]):.1f}" for k in keys) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
