"""The study's storage: Optuna's RDBStorage (SQLite or PostgreSQL, with heartbeats) and the lock under which a
worker claims a trial."""

import importlib.util
import os
import warnings
import zlib

from unstable_ppo.cli import UsageError

HEARTBEAT_S, GRACE_S = 20, 120
CONNECT_TIMEOUT_S = 5


def safe_url(url):
    try:
        from sqlalchemy.engine import make_url  # late: the tune extra is optional

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url):
    """Optuna's RDBStorage at `url`, with heartbeats; an unreachable one is a one-line error within seconds."""
    import optuna  # late: the tune extra is optional
    import sqlalchemy  # late: the tune extra is optional

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as e:
        raise UsageError(f"--storage: bad URL {url!r}: {e}") from None
    dialect = parsed.get_backend_name()
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 takes psycopg (3) for a plain postgresql:// URL; the "tune" extra installs psycopg2.
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    connect_args = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": CONNECT_TIMEOUT_S},
                    "mysql": {"connect_timeout": CONNECT_TIMEOUT_S}}.get(dialect, {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                                              heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as e:  # sqlalchemy's OperationalError, a missing driver, ...
        first = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise UsageError(f"cannot open the storage {safe_url(url)}: {first[0] if first else type(e).__name__}") \
            from None


class ClaimLock:
    """Held while a worker decides whether to start a trial and creates it: a file lock next to a SQLite
    database, a PostgreSQL advisory lock, else nothing (several workers might then overshoot --n_trials)."""

    def __init__(self, storage, study_name):
        self.engine, self.held, self.file, self.connection = storage.engine, False, None, None
        self.dialect = self.engine.dialect.name
        self.key = zlib.crc32(f"unstable_ppo.tune:{study_name}".encode())
        if self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            self.path = os.path.abspath(self.engine.url.database) + ".lock"
        else:
            self.path = None

    def acquire(self):
        if self.path:
            import fcntl  # late: POSIX only, SQLite storage only

            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.dialect == "postgresql":
            from sqlalchemy import text  # late: the tune extra is optional

            self.connection = self.connection or self.engine.connect()
            self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            self.connection.commit()
        self.held = True

    def release(self):
        if not self.held:
            return
        self.held = False
        if self.file is not None:
            import fcntl  # late: POSIX only, SQLite storage only

            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None
        elif self.connection is not None:
            from sqlalchemy import text  # late: the tune extra is optional

            self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self.connection.commit()

    def close(self):
        self.release()
        if self.connection is not None:
            self.connection.close()
            self.connection = None
