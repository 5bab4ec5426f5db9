"""Environments: every env the package builds, from an id, by the family that takes it.

    families.py      EnvFamily (Gymnasium's ids, the default), register_family, family_of
    atari.py         the Atari family: the standard pipeline, or ale-py's C++ vector env
    gymnax.py        the gymnax family: JAX-native envs as gymnax/<EnvId> ids (the gymnax extra)
    memory_tasks.py  CartPoleNoVel-v1, PendulumNoVel-v1 (registered with Gymnasium on import)
    vector.py        make_vec_env / as_vector_env: SAME_STEP vector envs with the run's EnvOptions
    monitor.py       Monitor CSVs, and cutting them back to a checkpoint on resume
    gather.py        gathering worker processes (--gather_per_worker)
    supervisor.py    envs rebuilt when one fails; env errors tagged with the env's index
"""

from unstable_ppo.config import EnvOptions
from unstable_ppo.envs import atari, gymnax, memory_tasks  # noqa: F401  register the families and the memory tasks
from unstable_ppo.envs.families import EnvFamily, family_of, make_env, register_family, registered_id
from unstable_ppo.envs.vector import EnvBuilder, as_vector_env, autoreset_mode, make_vec_env, with_time_feature

__all__ = ["EnvBuilder", "EnvFamily", "EnvOptions", "as_vector_env", "autoreset_mode", "family_of", "make_env",
           "make_vec_env", "register_family", "registered_id", "with_time_feature"]
