"""Episode logs in the format other RL tools read: Monitor CSVs (TensorBoard scalars: `unstable_ppo.summaries`)."""

import csv
import glob
import json
import os
import time

import gymnasium as gym


class Monitor(gym.Wrapper):
    """Records every finished episode: `info["episode"]` and, with a filename, one CSV row.

    The file starts with `#{"t_start": ..., "env_id": ...}` and a `r,l,t` header (return,
    length, seconds since t_start), the layout that Stable-Baselines3's and OpenAI
    baselines' plotting scripts read. Rows are flushed as they are written, so a
    killed run keeps every finished episode; `append=True` continues an existing
    file (a resumed run). Placed directly on the raw env, it sees the real score:
    for Atari that is the unclipped game score over whole games.
    """

    def __init__(self, env, filename=None, append=False):
        super().__init__(env)
        self.t_start = time.time()
        self._file = None
        if filename is not None:
            self._file = MonitorFile(filename, env.spec.id if env.spec is not None else None, append)
            self.t_start = self._file.t_start
        self._return, self._length = 0.0, 0

    def reset(self, **kwargs):
        self._return, self._length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        if terminated or truncated:
            episode = {"r": self._return, "l": self._length, "t": time.time() - self.t_start}
            info = {**info, "episode": episode}
            if self._file is not None:
                self._file.write_episode(episode)
        return obs, reward, terminated, truncated, info

    def close(self):
        if self._file is not None:
            self._file.close()
        return super().close()


class MonitorFile:
    """One Monitor CSV: header on creation, a flushed `r,l,t` row per episode."""

    def __init__(self, filename, env_id, append=False):
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        header = None
        if append and os.path.isfile(filename) and os.path.getsize(filename) > 0:
            header, _ = read_monitor(filename)
        self.t_start = header["t_start"] if header else time.time()
        self._file = open(filename, "a" if header else "w", newline="")
        self._writer = csv.writer(self._file)
        if not header:
            self._file.write("#" + json.dumps({"t_start": self.t_start, "env_id": env_id}) + "\n")
            self._writer.writerow(["r", "l", "t"])
            self._file.flush()

    def write_episode(self, episode):
        self._writer.writerow([round(float(episode["r"]), 6), int(episode["l"]), round(float(episode["t"]), 6)])
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


def read_monitor(filename):
    """(header dict, list of {"r", "l", "t"}) from a Monitor CSV."""
    with open(filename) as f:
        first = f.readline()
        if not first.startswith("#"):
            raise ValueError(f"{filename} is not a Monitor CSV: it does not start with a '#{{...}}' header")
        header = json.loads(first[1:])
        rows = [{"r": float(r["r"]), "l": int(r["l"]), "t": float(r["t"])} for r in csv.DictReader(f)]
    return header, rows


def monitor_episodes(monitor_dir):
    """{file name: episodes written} of the Monitor CSVs in `monitor_dir`: saved with a checkpoint, so
    that a resume from it can drop the episodes written after it (`rewind_monitor_files`)."""
    counts = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(monitor_dir), "*.monitor.csv"))):
        with open(path, "rb") as f:
            counts[os.path.basename(path)] = max(0, f.read().count(b"\n") - 2)  # less the two header lines
    return counts


def rewind_monitor_files(monitor_dir, episodes):
    """Cut each Monitor CSV back to the episodes it held at the checkpoint a run resumes from.

    A killed run's CSVs go on past its last checkpoint: those episodes were played by a policy the
    resumed run never had, and their steps are trained again. Cut, the CSVs count the same steps as
    the resumed run (a row torn by the kill goes too). A CSV the checkpoint did not know is removed.
    """
    for path in glob.glob(os.path.join(glob.escape(monitor_dir), "*.monitor.csv")):
        keep = episodes.get(os.path.basename(path))
        if keep is None:
            os.remove(path)
            continue
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        size = sum(len(line) + 1 for line in lines[:keep + 2])
        if os.path.getsize(path) > size:
            with open(path, "r+b") as f:
                f.truncate(size)
