"""`python run.py --env_id=...`: the same as `python -m unstable_ppo.run`."""

from unstable_ppo.run import entry_point

if __name__ == "__main__":
    entry_point()
