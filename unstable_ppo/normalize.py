"""Reward transforms and running observation/reward normalization, in numpy.

They run inside PPO's rollout rather than as env wrappers, so their statistics
belong to the PPO object: `PPO.save` writes them to `ppo.json` (plain JSON lists),
`PPO.load` restores them, and evaluation uses them frozen. Episode returns in the
Monitor files and in evaluations stay in the env's own reward scale.
"""

import types

import numpy as np

from unstable_ppo.config import REWARD_TRANSFORMS

CLIP_OBS = 10.0
CLIP_REWARD = 10.0
EPSILON = 1e-8

# The array functions `normalized_obs` and `acting.env_actions` are written with (their `xp`), in numpy:
# `asarray(x, dtype)` casts (no copy where the dtype is already right), `reshape(x, shape)`, `clip(x, low, high)`.
# The exported graph passes the same functions as TensorFlow ops (`export.graph.tensorflow_ops`). The ndarray
# methods, as `np.reshape` and `np.clip` call them without their Python wrappers (which would cost more than
# the rest of a step's conversion).
NUMPY = types.SimpleNamespace(asarray=np.asarray, reshape=np.ndarray.reshape, clip=np.ndarray.clip)


def transform_reward(rewards, transform, scale=0.01):
    """The reward transforms of the TF1 reference code (the first seed document).

    `identity`; `scale`: r · scale; `positive`: max(-0.001, r / 100), which keeps a
    reward above a tiny negative floor.
    """
    rewards = np.asarray(rewards, np.float32)
    if transform == "identity":
        return rewards
    if transform == "scale":
        return rewards * np.float32(scale)
    if transform == "positive":
        return np.maximum(np.float32(-0.001), rewards / np.float32(100.0))
    raise ValueError(f"unknown reward_transform {transform!r}: use one of {', '.join(REWARD_TRANSFORMS)}")


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged with the parallel-variance formula.

    Chan, Golub and LeVeque (1979): merging (mean, M2, n) of two samples is exact, so
    the result equals `np.mean`/`np.var` of everything seen, batch sizes aside. `count`
    starts at a tiny epsilon (as in SB3/CleanRL) so the first merge needs no special case.
    """

    def __init__(self, shape=(), epsilon=1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(epsilon)

    def update(self, x):
        x = np.asarray(x, np.float64)
        if len(x) == 0:
            return
        self.update_from_moments(x.mean(axis=0), x.var(axis=0), len(x))

    def update_from_moments(self, batch_mean, batch_var, batch_count):
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = (self.var * self.count + batch_var * batch_count
              + np.square(delta) * self.count * batch_count / total)
        self.mean = self.mean + delta * batch_count / total
        self.var = m2 / total
        self.count = float(total)

    @property
    def std(self):
        return np.sqrt(self.var + EPSILON)

    def to_json(self):
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    @classmethod
    def from_json(cls, data, shape=()):
        rms = cls(shape)
        mean, var = np.asarray(data["mean"], np.float64), np.asarray(data["var"], np.float64)
        if mean.shape != tuple(shape) or var.shape != tuple(shape):
            raise ValueError(f"normalizer statistics of shape {mean.shape} do not fit shape {tuple(shape)}")
        count = float(data["count"])
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()
                and np.isfinite(count) and count > 0):
            raise ValueError("normalizer statistics are not finite, or have a negative variance or count")
        rms.mean, rms.var, rms.count = mean, var, count
        return rms


class Normalizer:
    """Observation normalization and reward scaling for one PPO, with their statistics.

    - observations: `clip((obs - mean) / std, ±10)` with a running mean/std per feature;
    - rewards: divided by the running std of the discounted return (not the reward: that
      keeps value targets of order one whatever the horizon), clipped to ±10 — as SB3's
      VecNormalize and CleanRL's NormalizeReward do. The discounted return restarts at
      every episode end.

    Statistics only move through `observe_obs` and `scale_rewards`, which the training
    rollout alone calls; `obs()` uses them as they are.

    For Dict/Tuple observations `obs_shape` is `{key: shape}` of the vector entries
    (`ObservationLayout.vector_entries`): each has its own statistics (`obs_rms` a dict), the
    other entries (images, indices) pass through as they are.
    """

    def __init__(self, obs_shape, num_envs, gamma, normalize_obs=False, normalize_reward=False):
        self.normalize_obs = bool(normalize_obs)
        self.normalize_reward = bool(normalize_reward)
        self.gamma = float(gamma)
        self.obs_rms = None
        if normalize_obs:
            self.obs_rms = ({k: RunningMeanStd(tuple(shape)) for k, shape in obs_shape.items()}
                            if isinstance(obs_shape, dict) else RunningMeanStd(tuple(obs_shape)))
        self.ret_rms = RunningMeanStd(()) if normalize_reward else None
        self.returns = np.zeros(num_envs, np.float64)

    @property
    def active(self):
        return self.normalize_obs or self.normalize_reward

    def observe_obs(self, obs):
        """Fold a batch of fresh env observations into the statistics (training only)."""
        if isinstance(self.obs_rms, dict):
            for key, rms in self.obs_rms.items():
                rms.update(obs[key])
        elif self.obs_rms is not None:
            self.obs_rms.update(obs)

    def obs(self, obs):
        """Observations as the network sees them (unchanged without `normalize_obs`)."""
        if self.obs_rms is None:
            return obs
        if isinstance(self.obs_rms, dict):
            return {k: normalized_obs(v, self.obs_rms[k]) if k in self.obs_rms else v for k, v in obs.items()}
        return normalized_obs(obs, self.obs_rms)

    def scale_rewards(self, rewards, dones, live=None):
        """Update the return statistics with one step of rewards and return the scaled rewards.

        `live` marks the envs whose step was real (NEXT_STEP reset rows are not).
        """
        if self.ret_rms is None:
            return np.asarray(rewards, np.float32)
        live = np.ones(len(rewards), bool) if live is None else np.asarray(live, bool)
        self.returns = np.where(live, self.returns * self.gamma + rewards, self.returns)
        self.ret_rms.update(self.returns[live])
        self.returns[np.asarray(dones, bool)] = 0.0
        scaled = np.asarray(rewards, np.float64) / self.ret_rms.std
        return np.clip(scaled, -CLIP_REWARD, CLIP_REWARD).astype(np.float32)

    def to_json(self):
        obs_rms = self.obs_rms
        return {
            "obs_rms": ({k: rms.to_json() for k, rms in obs_rms.items()} if isinstance(obs_rms, dict)
                        else obs_rms.to_json() if obs_rms is not None else None),
            "ret_rms": self.ret_rms.to_json() if self.ret_rms is not None else None,
            "returns": self.returns.tolist(),
            "clip_obs": CLIP_OBS,
            "clip_reward": CLIP_REWARD,
        }

    def load_json(self, data, obs_shape):
        """Restore statistics saved by `to_json` (what this normalizer does not use is ignored).

        A statistic this normalizer uses must be there: a `ValueError` (or `TypeError`,
        `KeyError`) says what is missing or malformed.
        """
        for name, rms, shape in (("obs_rms", self.obs_rms, obs_shape), ("ret_rms", self.ret_rms, ())):
            if rms is None:
                continue
            if not isinstance(data.get(name), dict):
                raise ValueError(f"{name} is missing or not an object")
            if isinstance(rms, dict):  # per entry of a Dict observation
                missing = sorted(set(rms) - set(data[name]))
                if missing:
                    raise ValueError(f"{name} has no statistics for the entries {missing}")
                setattr(self, name, {k: RunningMeanStd.from_json(data[name][k], shape[k]) for k in rms})
            else:
                setattr(self, name, RunningMeanStd.from_json(data[name], shape))
        returns = np.asarray(data.get("returns", []), np.float64)
        if returns.shape == self.returns.shape:  # another num_envs starts its returns afresh
            self.returns = returns


def normalized_obs(obs, rms, xp=NUMPY, dtype=np.float64):
    """`clip((obs - mean) / std, ±CLIP_OBS)` as float32, with the statistics of `rms`, computed in `dtype`.

    The one statement of this rule: `Normalizer.obs` runs it on numpy arrays (`NUMPY`) in float64; the
    exported graph runs it on TensorFlow tensors (`export.graph.tensorflow_ops`) in float32, as LiteRT
    has no float64 kernels.
    """
    normalized = (xp.asarray(obs, dtype) - np.asarray(rms.mean, dtype)) / np.asarray(rms.std, dtype)
    return xp.asarray(xp.clip(normalized, -CLIP_OBS, CLIP_OBS), np.float32)
