"""`python run.py --env_id=...`: the same as `python -m unstable_ppo.run`."""

from absl import flags

from unstable_ppo import run

flags.adopt_module_key_flags(run)  # so that --help lists the runner's flags

if __name__ == "__main__":
    run.entry_point()
