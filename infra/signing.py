"""Where the fleet secret comes from: ``$REAPER_SECRET``, a file, or nowhere (``--insecure``).

The envelope format and its HMAC live in :mod:`reaper_engine.signing`.
"""

from __future__ import annotations

import os
from pathlib import Path

from reaper_engine.signing import SecretError, TaskRejectedError, TaskSigner

# The envelope types are re-exported: the Redis queue adapter seals with them.
__all__ = [
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "SecretError",
    "TaskRejectedError",
    "TaskSigner",
    "load_secret",
    "signer_for",
]

SECRET_ENV = "REAPER_SECRET"  # noqa: S105 - the variable's name, not a secret
SECRET_FILE_ENV = "REAPER_SECRET_FILE"  # noqa: S105 - a name


def load_secret(
    secret_file: Path | None = None,
    env: dict[str, str] | None = None,
    *,
    configured: Path | None = None,
) -> bytes | None:
    """The fleet secret, from the first of: ``secret_file`` (the command line's
    ``--secret-file``), ``$REAPER_SECRET``, ``$REAPER_SECRET_FILE``, ``configured`` (the
    config's ``[fleet] secret_file``). The same order as the Redis URL's: what a command is
    told beats its environment, which beats the config file. None when nothing is set.
    """
    env = dict(os.environ) if env is None else env
    if secret_file is None:
        value = env.get(SECRET_ENV)
        if value:
            return value.strip().encode("utf-8")
    path = secret_file or (Path(env[SECRET_FILE_ENV]) if env.get(SECRET_FILE_ENV) else configured)
    if path is None:
        return None
    try:
        secret = path.read_bytes().strip()
    except OSError as err:
        raise SecretError(f"cannot read the fleet secret file {path}: {err.strerror}") from None
    if not secret:
        raise SecretError(f"the fleet secret file {path} is empty")
    return secret


def signer_for(
    secret_file: Path | None,
    *,
    insecure: bool,
    env: dict[str, str] | None = None,
    configured: Path | None = None,
) -> TaskSigner:
    """The signer a fleet command runs with: a secret, or insecure mode only if asked for."""
    secret = load_secret(secret_file, env, configured=configured)
    if secret is None and not insecure:
        raise SecretError(
            f"no fleet secret: give --secret-file, set {SECRET_ENV} or {SECRET_FILE_ENV}, or "
            "[fleet] secret_file in the config, on every engine and worker; or pass "
            "--insecure to run unsigned (anyone who can write to Redis could then order kills)"
        )
    return TaskSigner(secret)
