"""The rollout buffer and GAE(λ), in plain numpy.

Rows are indexed `[t, env]`. Two facts about gymnasium's vector envs shape it:

- Truncation is not termination. `next_values[t]` is V(s_{t+1}) as the env saw it
  — for a truncated episode, the value of its final observation — and only
  `terminated[t]` removes the bootstrap. `dones[t]` (either end) cuts the λ-chain.
- With NEXT_STEP autoreset the row after an episode end is a reset row: the env
  ignored its action and returned reward 0. Its `mask` is 0, so GAE's result for
  it is never used and the loss never sees it.
"""

import numpy as np


def td_residuals(rewards, values, next_values, terminated, gamma):
    """δ_t = r_t + γ V(s_{t+1}) (1 - terminal_t) - V(s_t): a truncated episode still bootstraps."""
    return rewards + gamma * next_values * (1.0 - terminated) - values


def gae_step(advantage, delta, not_done, gamma, gae_lambda):
    """One step of GAE's backward recursion, A_t = δ_t + γλ (1 - done_t) A_{t+1}.

    Plain arithmetic, so the numpy loop below and the compiled trainer's `lax.scan` share it.
    """
    return delta + gamma * gae_lambda * not_done * advantage


def compute_gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """Generalized advantage estimation (Schulman et al., 2016) over `[T, N]` arrays.

    Returns `(advantages, returns)` with `returns = advantages + values`, the value
    function's regression target (TD(λ) return).
    """
    rewards = np.asarray(rewards, np.float32)
    advantages = np.zeros_like(rewards)
    not_done = 1.0 - np.asarray(dones, np.float32)
    deltas = td_residuals(rewards, values, next_values, np.asarray(terminated, np.float32), gamma)
    last = np.zeros(rewards.shape[1:], np.float32)
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = gae_step(last, deltas[t], not_done[t], gamma, gae_lambda)
        advantages[t] = last
    return advantages, advantages + values


class RolloutBuffer:
    """Preallocated `[num_steps, num_envs]` arrays, refilled every rollout.

    A recurrent policy's rollout (`state_size` > 0) also keeps the LSTM state each step
    was acted from and whether the state was zeroed before it (`episode_starts`); its
    training batch is laid out env by env, so that every run of `sequence_length`
    consecutive rows is one env's steps, in order, inside this rollout.

    Dict/Tuple observations (`obs_shape` and `obs_dtype` dicts, `observations.ObservationLayout`)
    are a dict of arrays, one per entry; `arrays()` names them `obs.<key>`.
    """

    def __init__(self, num_steps, num_envs, obs_shape, obs_dtype, action_shape, action_dtype, state_size=0):
        shape = (num_steps, num_envs)
        self.state_size = state_size
        if state_size:
            self.states = np.zeros(shape + (state_size,), np.float32)
            self.episode_starts = np.zeros(shape, np.float32)
        if isinstance(obs_shape, dict):
            self.obs = {k: np.zeros(shape + tuple(obs_shape[k]), obs_dtype[k]) for k in obs_shape}
        else:
            self.obs = np.zeros(shape + tuple(obs_shape), obs_dtype)
        self.actions = np.zeros(shape + tuple(action_shape), action_dtype)
        self.log_probs = np.zeros(shape, np.float32)
        self.values = np.zeros(shape, np.float32)
        self.next_values = np.zeros(shape, np.float32)
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, bool)
        self.dones = np.zeros(shape, bool)
        # True where the collector put V(final observation) into `next_values`
        # itself (SAME_STEP autoreset: the next row already shows the reset obs).
        self.final_value_set = np.zeros(shape, bool)
        self.mask = np.ones(shape, np.float32)
        self.advantages = np.zeros(shape, np.float32)
        self.returns = np.zeros(shape, np.float32)

    def finish(self, last_values, gamma, gae_lambda):
        """Fill `next_values` from the following row (or `last_values`), then run GAE."""
        following = np.concatenate([self.values[1:], last_values[None]], axis=0)
        self.next_values = np.where(self.final_value_set, self.next_values, following)
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.next_values, self.terminated, self.dones,
            gamma, gae_lambda,
        )

    def arrays(self):
        """`{name: array}` of everything a rollout filled (what a gathering worker sends back)."""
        arrays = {}
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                arrays[name] = value
            elif isinstance(value, dict):  # structured observations
                arrays.update({f"{name}.{key}": entry for key, entry in value.items()})
        return arrays

    def store_obs(self, t, obs):
        """Row `t` of the observations := `obs` (an array, or a dict of entries)."""
        if isinstance(self.obs, dict):
            for key, entry in obs.items():
                self.obs[key][t] = entry
        else:
            self.obs[t] = obs

    def obs_row(self, t):
        return {k: v[t] for k, v in self.obs.items()} if isinstance(self.obs, dict) else self.obs[t]

    def store_columns(self, arrays, columns):
        """Write another buffer's `arrays()` into env columns `columns` (a slice) of this one."""
        num_envs = self.mask.shape[1]
        for name, value in arrays.items():
            owner, attribute = self, name
            if name.startswith("obs.") and isinstance(self.obs, dict):
                owner, attribute = self.obs, name[len("obs."):]
            target = owner.get(attribute) if isinstance(owner, dict) else getattr(owner, attribute, None)
            full = (value.shape[0], num_envs, *value.shape[2:])
            if not isinstance(target, np.ndarray) or target.shape != full or target.dtype != value.dtype:
                target = np.zeros(full, value.dtype)
                if isinstance(owner, dict):
                    owner[attribute] = target
                else:
                    setattr(owner, attribute, target)
            target[:, columns] = value

    def training_batch(self):
        """The rollout flattened to rows, keyed as `losses.ppo_loss` expects.

        Row `t * num_envs + env`; for a recurrent rollout, row `env * num_steps + t`.
        """
        if self.state_size:
            flat = lambda a: np.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:])  # noqa: E731
        else:
            flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        batch = {
            "obs": {k: flat(v) for k, v in self.obs.items()} if isinstance(self.obs, dict) else flat(self.obs),
            "actions": flat(self.actions),
            "old_log_prob": flat(self.log_probs),
            "old_values": flat(self.values),
            "advantages": flat(self.advantages),
            "returns": flat(self.returns),
            "mask": flat(self.mask),
        }
        if self.state_size:
            batch["states"] = flat(self.states)
            batch["episode_starts"] = flat(self.episode_starts)
        return batch


def sequence_minibatches(rng, num_rows, sequence_length, batch_size):
    """Row indices `(num_minibatches, batch_size)` made of whole, shuffled sequences.

    Rows `[k * sequence_length, (k + 1) * sequence_length)` are sequence k; a minibatch
    holds `batch_size // sequence_length` of them, each in time order. As for rows,
    a remainder that fills no minibatch is left out, a different one each epoch.
    """
    num_sequences = num_rows // sequence_length
    per_minibatch = batch_size // sequence_length
    count = num_sequences // per_minibatch
    chosen = rng.permutation(num_sequences)[: count * per_minibatch]
    rows = chosen[:, None] * sequence_length + np.arange(sequence_length)
    return rows.reshape(count, per_minibatch * sequence_length)
