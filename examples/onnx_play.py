"""Play a policy exported to ONNX, with onnxruntime, numpy and gymnasium only (plus ale_py for Atari).

    python -m unstable_ppo.export --model_dir=log/CartPole-v1/ppo/0/model --format=onnx --output=cartpole/policy.onnx
    python examples/onnx_play.py cartpole/policy.onnx CartPole-v1 --episodes=10

    python -m unstable_ppo.export --model_dir=log/BreakoutNoFrameskip-v4/ppo/0/model --best \\
        --format=onnx --output=breakout/policy.onnx
    python examples/onnx_play.py breakout/policy.onnx BreakoutNoFrameskip-v4 --episodes=3 --max_steps=5000

Nothing from unstable_ppo, Keras or TensorFlow is imported: `policy.json` beside the `.onnx`
file says what the graph takes and returns. The graph holds the whole deterministic policy
(observation normalization, pixel scaling, the action's conversion to the env's format); the
env side is built here as the project's evaluation builds it: for Atari, gymnasium's
`AtariPreprocessing` (up to 30 no-ops, max-and-skip 4, 84x84 grayscale), FIRE after each reset
where the game needs it and a 4-frame stack; whole games, real score. Episode i of a run with
`--seed=S` is the episode `PPO.evaluate(gym.make(env_id), seed=S)` plays i-th, so the returns
match it seed for seed.

A deterministic Breakout policy sometimes never presses FIRE after losing a life, and the game
then runs to ALE's 27,000-step cap: `--max_steps` cuts episodes shorter.
"""

import argparse
import json
import os
import sys

import gymnasium as gym
import numpy as np
import onnxruntime as ort


class OnnxPolicy:
    """The exported policy: `policy(obs, episode_start)` -> the env's action, for one env."""

    def __init__(self, onnx_path):
        description = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "policy.json")
        if not os.path.isfile(onnx_path) or not os.path.isfile(description):
            sys.exit(f"error: {onnx_path} and the policy.json beside it are what `python -m unstable_ppo.export "
                     f"--format=onnx` writes: {onnx_path if not os.path.isfile(onnx_path) else description} "
                     f"does not exist")
        with open(description) as f:
            self.description = json.load(f)
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.inputs = {spec["name"]: spec for spec in self.description["inputs"]}
        self.recurrent = self.description["recurrent"]
        self.state = np.zeros((1, self.description["state_size"]), np.float32)

    def __call__(self, obs, episode_start=False):
        feed = {"obs": np.asarray(obs, self.inputs["obs"]["dtype"])[None]}  # a batch of one
        if not self.recurrent:
            return self.session.run(["action"], feed)[0][0]
        feed["state"] = self.state
        feed["episode_start"] = np.array([float(episode_start)], np.float32)
        action, self.state = self.session.run(["action", "next_state"], feed)
        return action[0]


class FireReset(gym.Wrapper):
    """FIRE, then UP, after a reset, for games that wait for it (as unstable_ppo.envs.atari does)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def make_env(env_id, preprocessing=None, max_steps=None):
    """`env_id` with the evaluation pipeline `policy.json` names (`env_preprocessing`), cut at `max_steps`."""
    if preprocessing is not None:  # an Atari game
        import ale_py

        gym.register_envs(ale_py)
        kwargs = {"frameskip": 1} if gym.spec(env_id).kwargs.get("frameskip", 1) != 1 else {}
        env = gym.make(env_id, **kwargs)
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=preprocessing["noop_max"], frame_skip=preprocessing["frame_skip"],
            screen_size=preprocessing["screen_size"], terminal_on_life_loss=False,
            grayscale_obs=preprocessing["grayscale"], scale_obs=False,
        )
        meanings = env.unwrapped.get_action_meanings()
        if preprocessing["fire_reset"] and len(meanings) >= 3 and meanings[1] == "FIRE":
            env = FireReset(env)
        env = gym.wrappers.FrameStackObservation(env, preprocessing["frame_stack"])
    else:
        env = gym.make(env_id)
    if max_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_steps)
    return env


def play(onnx_path, env_id, episodes, seed=None, max_steps=None):
    """Play `episodes` episodes; returns their returns and lengths."""
    policy = OnnxPolicy(onnx_path)
    env = make_env(env_id, policy.description.get("env_preprocessing"), max_steps)
    returns, lengths = [], []
    obs, _ = env.reset(seed=seed)
    try:
        for _ in range(episodes):
            total, steps, done = 0.0, 0, False
            while not done:
                action = policy(obs, episode_start=steps == 0)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
            returns.append(total)
            lengths.append(steps)
            obs, _ = env.reset()
    finally:
        env.close()
    return returns, lengths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx_path", help="the exported .onnx file (policy.json beside it)")
    parser.add_argument("env_id", help="the gymnasium env id, e.g. CartPole-v1 or BreakoutNoFrameskip-v4")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max_steps", type=int, default=None, help="cut episodes after this many steps")
    args = parser.parse_args()
    returns, lengths = play(args.onnx_path, args.env_id, args.episodes, args.seed, args.max_steps)
    for i, (ret, length) in enumerate(zip(returns, lengths), 1):
        print(f"episode {i}: return={ret:.2f} length={length}")
    print(f"mean_return={np.mean(returns):.2f} std_return={np.std(returns):.2f} episodes={len(returns)}")


if __name__ == "__main__":
    main()
