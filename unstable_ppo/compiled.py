"""The compiled trainer: a whole PPO iteration as one XLA program, for JAX-native (gymnax) envs on jax.

The Python-stepped path pays a round trip per env step (env -> numpy -> one compiled acting call).
With a gymnax env the env itself is JAX, so here one jitted function runs the whole iteration:

1. the rollout: `lax.scan` over `num_steps`, the `num_envs` envs `vmap`ped, gymnax's own autoreset
   (a truncated episode bootstraps from the value of its last observation, as the numpy path does);
2. GAE(λ): `lax.scan` backwards over `buffer.gae_step`, the numpy path's recursion;
3. every epoch and minibatch: `lax.scan`s over the model's own `train_step` (`backend/jax.py`), the same
   Keras model, loss (`losses.py`) and optimizer (`stateless_apply`) as the Python-stepped path.

The learning-rate and clip-range schedules are computed inside from the update's index. Only the
update's logs and the episodes that ended cross to the host. No second copy of the PPO math: the
acting step is the network's `act`, the loss is `ppo_loss`, GAE is `gae_step`.

Supported so far: feed-forward policies on Box/Discrete/MultiDiscrete/MultiBinary actions and array
observations, the clipped loss, advantage normalization, value clipping, the bounds penalty and the
entropy bonus. Every other option is a one-line error naming it (`CompiledTrainer.check`).
"""

import time

import jax
import jax.numpy as jnp
import keras
import numpy as np

from unstable_ppo.buffer import gae_step, td_residuals
from unstable_ppo.envs.gymnax import make_jax_env, to_gymnasium_space
from unstable_ppo.spaces import spaces_match

# Settings the compiled iteration does not implement yet, with the value that means "off".
UNSUPPORTED = {
    "recurrent": False, "use_sde": False, "use_kl_loss": False, "normalize_obs": False,
    "normalize_reward": False, "target_kl": None, "reward_transform": "identity",
    "time_feature": False, "gather_per_worker": 1, "worker_num": 1,
}


def compiled_gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """`buffer.compute_gae` as a backward `lax.scan` over the same step: `(advantages, returns)` of `[T, N]` arrays."""
    deltas = td_residuals(rewards, values, next_values, terminated, gamma)

    def backward(advantage, step):
        delta, not_done = step
        advantage = gae_step(advantage, delta, not_done, gamma, gae_lambda)
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, 1.0 - dones), reverse=True)
    return advantages, advantages + values


class CompiledTrainer:
    """Runs PPO iterations of `ppo` (a `PPO` on a gymnax env id) as one jitted function each.

    It steps its own `num_envs` copies of the env (gymnax states on the device), seeded from the
    PPO's seed; the Keras model's variables are read before and written back after each iteration,
    so saving, evaluation and callbacks see the current weights.
    """

    def __init__(self, ppo, env_id, seed=None, monitor_files=None):
        self.check(ppo.hp, env_id)
        self.monitor_files = monitor_files  # one MonitorFile per env, or None
        self.ppo, self.model, self.hp = ppo, ppo.model, ppo.hp
        if ppo.model.obs_layout.entries is not None:
            raise ValueError(f"{env_id}: the compiled trainer takes array observations, not {ppo.observation_space}")
        self.env, self.params = make_jax_env(env_id, ppo.hp.env_kwargs)
        for what, ours in (("observation", ppo.observation_space), ("action", ppo.action_space)):
            theirs = to_gymnasium_space(getattr(self.env, f"{what}_space")(self.params))
            if not spaces_match(ours, theirs):
                raise ValueError(f"the compiled trainer's env {env_id} has the {what} space {theirs}, the model {ours}")
        self.key = jax.random.key(0 if seed is None else seed)
        self.key, reset_key = jax.random.split(self.key)
        self.obs, self.env_state = jax.vmap(self.env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, self.hp.num_envs), self.params)
        self.episode_return = jnp.zeros(self.hp.num_envs)
        self.episode_length = jnp.zeros(self.hp.num_envs, jnp.int32)
        trainable, non_trainable, optimizer = self.model._variable_lists()[:3]
        self._lr_index = next(i for i, v in enumerate(optimizer) if v.path.endswith("learning_rate"))
        self._clip_index = next(i for i, v in enumerate(non_trainable) if v is self.model.clip_epsilon)
        self._iteration = jax.jit(self._iterate, static_argnums=(3,))

    @staticmethod
    def check(hp, env_id):
        """A one-line `ValueError` for a setting the compiled iteration does not implement."""
        if keras.backend.backend() != "jax":
            raise ValueError(f"the compiled trainer for {env_id} runs on the jax backend, not "
                             f"{keras.backend.backend()}: set KERAS_BACKEND=jax (or --backend=jax)")
        for name, off in UNSUPPORTED.items():
            value = getattr(hp, name)
            if value != off:
                raise ValueError(f"{name}={value!r} is not supported by the compiled trainer for {env_id} yet")
        if hp.batch_size > hp.num_envs * hp.num_steps:
            raise ValueError(f"batch_size {hp.batch_size} exceeds the rollout's {hp.num_envs * hp.num_steps} rows")

    # -- inside the XLA program --------------------------------------------------

    def _act(self, trainable, non_trainable, obs, key):
        model = self.model
        shape = (obs.shape[0], model.noise_size)
        if model.continuous:
            noise = jax.random.normal(key, shape)
        else:
            noise = jax.random.uniform(key, shape, minval=1e-6, maxval=1.0 - 1e-6)
        packed = model._stateless_act(trainable, non_trainable, (obs, noise), False)
        a = model.action_size
        return packed[:, :a], packed[:, a], packed[:, a + 1]

    def _value(self, trainable, non_trainable, obs):
        outputs, _ = self.model.stateless_call(trainable, non_trainable, obs)
        return outputs[1]

    def _env_actions(self, packed):
        """The acting step's packed floats -> (the buffer's actions, the env's), as `acting.env_actions` does."""
        space = self.ppo.action_space
        if self.model.continuous:
            return packed, jnp.clip(packed, space.low, space.high)
        actions = packed[:, 0].astype(jnp.int32)  # Discrete: gymnax has no other discrete space
        return actions, actions + int(space.start)

    def _rollout(self, trainable, non_trainable, carry):
        env, params, hp = self.env, self.params, self.hp

        def step(carry, key):
            obs, env_state, ep_return, ep_length = carry
            act_key, env_key = jax.random.split(key)
            obs = obs.astype(jnp.float32)
            packed, values, log_probs = self._act(trainable, non_trainable, obs, act_key)
            actions, env_actions = self._env_actions(packed)
            next_obs, env_state, rewards, terminated, truncated, info = jax.vmap(
                env.step, in_axes=(0, 0, 0, None))(jax.random.split(env_key, hp.num_envs), env_state, env_actions,
                                                   params)
            done = terminated | truncated
            next_values = self._value(trainable, non_trainable, info["final_observation"].astype(jnp.float32))
            ep_return, ep_length = ep_return + rewards, ep_length + 1
            row = dict(obs=obs, actions=actions, values=values, log_probs=log_probs,
                       rewards=rewards.astype(jnp.float32), terminated=terminated.astype(jnp.float32),
                       dones=done.astype(jnp.float32), next_values=next_values, episode_return=ep_return,
                       episode_length=ep_length)
            carry = (next_obs, env_state, jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length))
            return carry, row

        return jax.lax.scan(step, carry[:4], jax.random.split(carry[4], hp.num_steps))

    def _iterate(self, state, carry, update, num_updates):
        hp, model = self.hp, self.model
        trainable, non_trainable, optimizer, metrics = state
        remaining = 1.0 - update / num_updates  # the linear schedules' factor, as in PPO.learn
        learning_rate = hp.lr * remaining if hp.anneal_lr else jnp.asarray(hp.lr, jnp.float32)
        clip_range = hp.clip_range * remaining if hp.anneal_clip_range else non_trainable[self._clip_index]
        optimizer = list(optimizer)
        optimizer[self._lr_index] = jnp.asarray(learning_rate, optimizer[self._lr_index].dtype)
        non_trainable = list(non_trainable)
        non_trainable[self._clip_index] = jnp.asarray(clip_range, non_trainable[self._clip_index].dtype)

        key, rollout_key, shuffle_key = jax.random.split(carry[4], 3)
        env_carry, rows = self._rollout(trainable, non_trainable, (*carry[:4], rollout_key))
        advantages, returns = compiled_gae(rows["rewards"], rows["values"], rows["next_values"], rows["terminated"],
                                           rows["dones"], hp.gamma, hp.gae_lambda)
        rows_count = hp.num_envs * hp.num_steps

        def flat(x):
            return x.reshape(rows_count, *x.shape[2:])

        batch = dict(obs=flat(rows["obs"]), actions=flat(rows["actions"]), old_log_prob=flat(rows["log_probs"]),
                     old_values=flat(rows["values"]), advantages=flat(advantages), returns=flat(returns),
                     mask=jnp.ones(rows_count, jnp.float32))
        num_minibatches = rows_count // hp.batch_size

        def epoch(state, key):
            indices = jax.random.permutation(key, rows_count)[: num_minibatches * hp.batch_size]

            def minibatch(state, idx):
                logs, state = model.train_step(state, jax.tree.map(lambda v: v[idx], batch))
                return state, logs

            return jax.lax.scan(minibatch, state, indices.reshape(num_minibatches, hp.batch_size))

        state, logs = jax.lax.scan(epoch, (trainable, non_trainable, optimizer, metrics),
                                   jax.random.split(shuffle_key, hp.num_epochs))
        logs = {k: jnp.mean(v) for k, v in logs.items()}
        logs.update(learning_rate=learning_rate, clip_range=clip_range)
        episodes = (rows["dones"], rows["episode_return"], rows["episode_length"])
        return state, (*env_carry, key), logs, episodes

    # -- on the host ---------------------------------------------------------------

    def update(self, update: int, num_updates: int) -> tuple[dict, list[tuple[float, int]]]:
        """Run iteration `update` (0-based) of `num_updates`; returns its logs and the episodes that ended."""
        carry = (self.obs, self.env_state, self.episode_return, self.episode_length, self.key)
        state, carry, logs, (dones, returns, lengths) = self._iteration(
            self.model._state(), carry, jnp.asarray(update, jnp.float32), num_updates)
        self.obs, self.env_state, self.episode_return, self.episode_length, self.key = carry
        self.model._assign_state(state)
        logs = {k: float(v) for k, v in jax.device_get(logs).items()}
        logs["epochs"] = self.hp.num_epochs
        dones, returns, lengths = (np.asarray(x) for x in jax.device_get((dones, returns, lengths)))
        ended = [(float(returns[t, i]), int(lengths[t, i])) for t, i in zip(*np.nonzero(dones))]
        if self.monitor_files is not None:
            now = time.time()
            for t, i in zip(*np.nonzero(dones)):
                f = self.monitor_files[i]
                f.write_episode({"r": returns[t, i], "l": lengths[t, i], "t": now - f.t_start})
        return logs, ended
