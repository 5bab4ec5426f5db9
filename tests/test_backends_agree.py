"""The same seed is the same run on every backend: PPO is written once.

Each test compares this backend with both others (run in child processes), so
`python -m tests` runs the file once, with its first backend (`cross_backend`).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from unstable_ppo import PPO

pytestmark = pytest.mark.cross_backend

BACKENDS = ("tensorflow", "jax", "torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(num_envs=4, num_steps=32, num_epochs=2, batch_size=32, lr=1e-3)

RECURRENT = dict(recurrent=True, timestep_size=8, hidden_layer_size=16, shared_lstm=False, lstm_head_sizes=[8])
RUN = """
import json, sys, numpy as np
from unstable_ppo import PPO
ppo = PPO(sys.argv[1], seed=7, num_envs=4, num_steps=32, num_epochs=2, batch_size=32, lr=1e-3, **json.loads(sys.argv[3]))
ppo.learn(4 * 32 * 3)
np.savez(sys.argv[2], *ppo.model.get_weights())
"""


def run_elsewhere(backend, env_id, out, extra=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", RUN, env_id, out, json.dumps(extra or {})], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = np.load(out)
    return [data[f"arr_{i}"] for i in range(len(data.files))]


def others():
    return [backend for backend in BACKENDS if backend != keras.backend.backend()]


def test_initial_weights_do_not_depend_on_the_backend(tmp_path):
    script = "import sys, numpy as np\nfrom unstable_ppo import PPO\n" \
             "np.savez(sys.argv[1], *PPO('Pendulum-v1', seed=4).model.get_weights(), " \
             "*PPO('Pendulum-v1', seed=4, ortho_init=False).model.get_weights())\n"
    ours = [*PPO("Pendulum-v1", seed=4).model.get_weights(),
            *PPO("Pendulum-v1", seed=4, ortho_init=False).model.get_weights()]
    for other in others():
        env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
        out = str(tmp_path / f"{other}.npz")
        subprocess.run([sys.executable, "-c", script, out], env=env, check=True, timeout=300)
        theirs = np.load(out)
        assert len(ours) == len(theirs.files), other
        for i, w in enumerate(ours):
            np.testing.assert_array_equal(w, theirs[f"arr_{i}"], err_msg=other)


@pytest.mark.parametrize("env_id, extra", [("CartPole-v1", {}), ("CartPoleNoVel-v1", RECURRENT),
                                           ("Pendulum-v1", dict(use_sde=True, sde_sample_freq=4)),
                                           ("tests.helpers.envs:DictSpaces-v0", dict(normalize_obs=True))],
                         ids=["mlp", "lstm", "gsde", "dict"])
def test_three_updates_match_another_backend(tmp_path, env_id, extra):
    """Rollouts, GAE, minibatches (of sequences) and updates agree to float rounding across backends."""
    ppo = PPO(env_id, seed=7, **SETTINGS, **extra)
    before = ppo.model.get_weights()
    ppo.learn(4 * 32 * 3)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(ppo.model.get_weights(), before))
    assert moved > 1e-3  # training changed the weights...
    for other in others():
        theirs = run_elsewhere(other, env_id, str(tmp_path / f"{other}.npz"), extra)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ppo.model.get_weights(), theirs))
        assert diff < 1e-4, (other, diff)  # ...in the same way on every backend
