"""Run checkpoints: `latest` and `best`, each replaced atomically.

A run's model directory holds two symlinks, `latest` and `best`, each pointing to
a complete checkpoint directory (`model.keras` + `ppo.json`, see `PPO.save`). A new
checkpoint is written in full to a fresh directory first; then one `rename` of a
symlink swaps it in. A crash at any moment therefore leaves the previous checkpoint
loadable, never a mixture of two.
"""

import contextlib
import json
import os
import shutil
import uuid

from unstable_ppo.version import __version__
from unstable_ppo.faults import NonFiniteError

LATEST = "latest"
BEST = "best"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "ppo.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, unwritable directory...); the previous one is intact."""


def save_checkpoint(ppo, model_root, name, extra=None):
    """`ppo.save` into `model_root/name`, atomically; returns the checkpoint's path.

    A write that fails (`CheckpointError`) leaves the previous checkpoint in place
    and removes its own partial files.
    """
    target = f".{name}-{ppo.num_timesteps:012d}-{uuid.uuid4().hex[:8]}"
    link = os.path.join(model_root, name)
    try:
        os.makedirs(model_root, exist_ok=True)
        ppo.save(os.path.join(model_root, target), extra=extra)
        _fsync_dir(os.path.join(model_root, target))
        if os.path.isdir(link) and not os.path.islink(link):
            shutil.rmtree(link)  # a plain directory from a hand-made layout: replace it
        tmp_link = os.path.join(model_root, f".{name}.link-{uuid.uuid4().hex[:8]}")
        os.symlink(target, tmp_link)
        os.replace(tmp_link, link)
    except NonFiniteError:
        raise
    except Exception as e:  # Keras may wrap the OSError of a full disk
        shutil.rmtree(os.path.join(model_root, target), ignore_errors=True)
        cause = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        kept = "the previous one is intact" if os.path.isdir(link) else "there is no earlier one"
        raise CheckpointError(f"could not write the {name} checkpoint in {model_root} ({cause}); {kept}") from e
    _fsync_dir(model_root)
    _remove_stale(model_root, name, keep=target)
    return link


def resolve_checkpoint(path, best=False):
    """A directory holding `model.keras`: `path` itself, or the run's `latest`/`best` in it.

    A path that does not exist, is a file, or whose `latest`/`best` link points to a
    deleted directory is a one-line `FileNotFoundError` (`ValueError` for the file).
    """

    path = os.fspath(path)
    _check_link(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"not an unstable_ppo model directory: {path} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is a file, not a model directory: pass the directory that holds "
                         f"{MODEL_FILE} and {META_FILE}")
    if best:
        best_path = os.path.join(path, BEST)
        _check_link(best_path)
        if not os.path.isdir(best_path):
            raise FileNotFoundError(f"no best checkpoint in {path}: {best_path} is missing")
        return best_path
    if not os.path.isfile(os.path.join(path, MODEL_FILE)):
        latest = os.path.join(path, LATEST)
        _check_link(latest)
        if os.path.isdir(latest):
            return latest
    return path


def dangling_link(path):
    """Where the symlink `path` points, if that does not exist; else None."""
    if os.path.islink(path) and not os.path.exists(path):
        return os.readlink(path)
    return None


def _check_link(path):
    target = dangling_link(path)
    if target is not None:
        raise FileNotFoundError(f"broken checkpoint link {path}: it points to {target}, which does not exist")


def has_checkpoint(model_root):
    return os.path.isdir(os.path.join(model_root, LATEST))


def _remove_stale(model_root, name, keep):
    """Checkpoint directories of `name` that no link points to (superseded, or left by a crash)."""
    for entry in os.listdir(model_root):
        if entry.startswith(f".{name}-") and entry != keep:
            shutil.rmtree(os.path.join(model_root, entry), ignore_errors=True)
        elif entry.startswith(f".{name}.link-"):
            try:
                os.remove(os.path.join(model_root, entry))
            except OSError:
                pass


def _fsync_dir(path):
    """Make renames and new files in `path` durable before the next step relies on them."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_metadata(meta_path):
    """`ppo.json` as a dict, checked to be unstable_ppo's and not newer than this version reads.

    Anything else is a one-line `ValueError` naming the file.
    """
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read model metadata {meta_path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # bad JSON or text (UnicodeDecodeError is a ValueError)
        raise ValueError(f"corrupt model metadata {meta_path}: {_one_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("format") != "unstable_ppo":
        raise ValueError(f"corrupt model metadata {meta_path}: not an unstable_ppo metadata file")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"corrupt model metadata {meta_path}: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{os.path.dirname(meta_path) or '.'} was saved in format version {version}, newer than this "
            f"unstable_ppo ({__version__}) reads ({FORMAT_VERSION}): upgrade unstable_ppo"
        )
    return meta


@contextlib.contextmanager
def _metadata_field(meta_path, name):
    """Turn any error while reading field `name` of `ppo.json` into one line naming the file and field."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        raise ValueError(f"corrupt model metadata {meta_path}: bad {name}: {_one_line(e)}") from None


def _one_line(error):
    if isinstance(error, KeyError) and error.args:
        return f"{error.args[0]!r} is missing"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def write_atomically(path, write, suffix=""):
    """Write the file `path` through `write(tmp_path)`, fsync it, and rename it into place.

    A reader (or a crash) sees the old file or the new one, never half of one. `suffix` ends the
    temporary name, for writers that insist on an extension (Keras's `.keras`). Every file
    unstable_ppo writes goes through here.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomically(path, obj):
    """`obj` as indented JSON in `path`, written atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    write_atomically(path, write)
