"""The bundled per-env settings (`unstable_ppo/configs/*.flags`) from Python, as the runner applies them.

    from unstable_ppo import PPO
    from unstable_ppo.bundled import bundled_settings

    bundled = bundled_settings("LunarLander-v3")        # the RL Zoo's tuned settings
    ppo = PPO("LunarLander-v3", seed=0, **bundled.hyperparameters)
    ppo.learn(bundled.total_timesteps)

The flagfile is parsed by the runner's own flags (the same types and checks as
`--flagfile`), and only the PPO settings it changes are returned: the runner-only
ones (evaluation and save intervals, the logdir) stay the runner's.
"""

import dataclasses
import os

from unstable_ppo import config
from unstable_ppo.cli import UsageError
from unstable_ppo.run_settings import CONFIG_DIR, RunSettings, env_config_file


@dataclasses.dataclass(frozen=True)
class BundledSettings:
    """What a bundled flagfile says for an env: `PPO(env_id, **hyperparameters)`, `learn(total_timesteps)`."""

    env_id: str
    path: str  # the flagfile
    hyperparameters: dict  # the PPO settings it changes (keyword arguments of PPO)
    total_timesteps: int | None  # its budget, None if it sets none


def bundled_settings(env_id: str) -> BundledSettings:
    """The bundled settings for `env_id` (`configs/<id>.flags`, or its family's: `atari.flags` for ALE games).

    An id with none is a `ValueError` that lists those that have them.
    """
    from unstable_ppo.tune.settings import fresh_runner_flags  # the runner's flags, on a FlagValues of their own

    path = env_config_file(env_id)
    if path is None:
        bundled = sorted(name[:-len(".flags")] for name in os.listdir(CONFIG_DIR) if name.endswith(".flags"))
        raise ValueError(f"no bundled settings for {env_id!r}: {CONFIG_DIR} has them for "
                         f"{', '.join(n for n in bundled if n != 'atari')} and every Atari game (atari.flags)")
    try:
        values = fresh_runner_flags([f"--env_id={env_id}", "--noenv_defaults", f"--flagfile={path}"])
    except UsageError as e:
        raise ValueError(f"{path}: {e}") from None
    settings = RunSettings(values).hyperparameters()
    defaults = {field.name: field.default for field in config.settings()}
    changed = {name: value for name, value in settings.items() if value != defaults[name]}
    if values.num_episodes:
        total = values.num_episodes * values.num_envs * values.num_steps
    else:  # the runner's own default budget is not the flagfile's
        total = values.total_timesteps if values["total_timesteps"].present else None
    return BundledSettings(env_id, path, changed, total)
