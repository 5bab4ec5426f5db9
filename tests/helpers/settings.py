"""Small PPO settings: rollouts of a few dozen steps, so that an update takes well under a second.

Tests check numbers that follow from these sizes (timesteps, updates, optimizer steps,
learning-rate schedules), so each named dict keeps the sizes its tests were written for.
"""

# 4 envs x 16 steps: 64 steps a rollout, 2 minibatches an epoch. The default of the `small_ppo` fixture.
SMALL_4X16 = dict(num_envs=4, num_steps=16, num_epochs=2, batch_size=32)
# 2 envs x 16 steps, 1 epoch of 2 minibatches: the cheapest agent that still trains (save/load tests).
SMALL_2X16 = dict(num_envs=2, num_steps=16, num_epochs=1, batch_size=16)
# 2 envs x 64 steps: 128 steps a rollout, 4 minibatches an epoch (the algorithm-option tests, on Pendulum).
SMALL_2X64 = dict(num_envs=2, num_steps=64, num_epochs=2, batch_size=32)
# A small LSTM policy: 3 envs x 16 steps in sequences of 8, 2 sequences a minibatch.
SMALL_RECURRENT = dict(num_envs=3, num_steps=16, num_epochs=2, batch_size=16, timestep_size=8, hidden_layer_size=16,
                       recurrent=True)
