"""Training curves for TensorBoard, keyed as Stable-Baselines3 keys them, on any Keras backend."""

import glob
import itertools
import os
import socket
import struct
import time


# PPO log name -> the TensorBoard key Stable-Baselines3 users know. SB3 logs the
# entropy *loss*, i.e. minus the entropy.
TENSORBOARD_KEYS = {
    "ep_rew_mean": ("rollout/ep_rew_mean", 1.0),
    "ep_len_mean": ("rollout/ep_len_mean", 1.0),
    "approx_kl": ("train/approx_kl", 1.0),
    "clip_fraction": ("train/clip_fraction", 1.0),
    "entropy": ("train/entropy_loss", -1.0),
    "explained_variance": ("train/explained_variance", 1.0),
    "policy_loss": ("train/policy_gradient_loss", 1.0),
    "value_loss": ("train/value_loss", 1.0),
    "loss": ("train/loss", 1.0),
    "learning_rate": ("train/learning_rate", 1.0),
    "clip_range": ("train/clip_range", 1.0),
    "epochs": ("train/n_epochs", 1.0),
    "std": ("train/std", 1.0),
    "kl": ("train/kl", 1.0),
    "kl_beta": ("train/kl_beta", 1.0),
    "lr_multiplier": ("train/lr_multiplier", 1.0),
    "bounds_penalty": ("train/bounds_penalty", 1.0),
    "fps": ("time/fps", 1.0),
    "eval_mean_reward": ("eval/mean_reward", 1.0),
    "eval_mean_ep_length": ("eval/mean_ep_length", 1.0),
}


class TensorBoardLogger:
    """Scalars for TensorBoard, keyed as Stable-Baselines3 keys them, on any Keras backend.

    The step is the number of env steps so far. Events are written as `tf.summary.scalar` writes
    them (a float32 tensor with the scalars plugin's metadata, one event per scalar) but through
    the `tensorboard` package's record writer, so a jax or torch run never imports TensorFlow
    (seconds of start-up and its C++ logging).
    """

    _files = itertools.count()

    def __init__(self, logdir):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._scalar = event_pb2.Event, scalar_pb
        os.makedirs(logdir, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(self._files)}.v2")
        self._file = open(os.path.join(logdir, name), "wb")
        self._writer = RecordWriter(self._file)
        self._put(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _put(self, event):
        self._writer.write(event.SerializeToString())

    def write(self, logs, step):
        for name, (key, sign) in TENSORBOARD_KEYS.items():
            if name in logs:
                self._put(self._event(wall_time=time.time(), step=int(step),
                                      summary=self._scalar(key, sign * float(logs[name]))))
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


def _read_records(path):
    """The TFRecord payloads of an event file, stopping at a record torn by a kill."""
    records = []
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                break
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                break
            records.append(data)
    return records


def rewind_tensorboard(tb_dir, step):
    """Drop the TensorBoard scalars logged after `step` (the checkpoint a run resumes from).

    Otherwise a resumed run's curves would hold two values for the steps trained again after a kill.
    Each event file that holds any is rewritten without them (atomically); a record torn by the kill
    goes too. Reads and writes TFRecords with the `tensorboard` package: no TensorFlow.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in glob.glob(os.path.join(glob.escape(tb_dir), "events.out.tfevents.*")):
        records = _read_records(path)
        kept = []
        for data in records:
            event = event_pb2.Event.FromString(data)
            if not (event.HasField("summary") and event.step > step):
                kept.append(data)
        if len(kept) == len(records) and os.path.getsize(path) == sum(len(d) + 16 for d in records):
            continue
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for data in kept:
                writer.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
