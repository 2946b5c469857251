"""Where data sets live when no folder is given.

The folder of a data set is, first found wins:

1. the folder given explicitly (``--data-dir``, ``root=``);
2. the data set's own environment variable (:data:`ENV_VARS`, e.g. ``$STRRNN_FSDD``), the folder itself;
3. ``$STRRNN_DATA/<folder>`` (one root for every data set);
4. ``<user data dir>/<folder>``: ``$XDG_DATA_HOME/strrnn`` or ``~/.local/share/strrnn`` on Linux,
   ``~/Library/Application Support/strrnn`` on macOS, ``%LOCALAPPDATA%\\strrnn`` on Windows.

Never a folder inside the installed package: after ``pip install`` that is site-packages. ``<folder>`` is
:data:`FOLDERS`' entry of the data set (``speech_commands_v0.01``, ``fsdd``, ``har``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VARS", "FOLDERS", "user_data_dir", "data_root", "dataset_dir", "env_var"]

#: dataset name -> its folder under the data root (names that share data share the folder)
FOLDERS: dict[str, str] = {
    "google12": "speech_commands_v0.01",
    "google13": "speech_commands_v0.01",
    "google30": "speech_commands_v0.01",
    "speech_commands": "speech_commands_v0.01",
    "google35": "speech_commands_v0.02",
    "fsdd": "fsdd",
    "fsdd_image": "fsdd",
    "har2": "har",
    "har6": "har",
    "mnist5k": "mnist5k",
    "imagenet": "imagenet",
}

#: folder -> the environment variable naming that data set's folder directly
ENV_VARS: dict[str, str] = {
    "speech_commands_v0.01": "STRRNN_SPEECH_COMMANDS",
    "speech_commands_v0.02": "STRRNN_SPEECH_COMMANDS_V2",
    "fsdd": "STRRNN_FSDD",
    "har": "STRRNN_HAR",
    "mnist5k": "STRRNN_MNIST5K",
    "imagenet": "STRRNN_IMAGENET",
}


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()  # an empty variable counts as unset
    return Path(os.path.expanduser(value)) if value else None


def user_data_dir() -> Path:
    """The per-user data folder of strrnn (``~/.local/share/strrnn`` on Linux; ``$XDG_DATA_HOME`` is honoured)."""
    # platformdirs comes with librosa (through pooch) and is declared in pyproject.toml as well
    import platformdirs

    return Path(platformdirs.user_data_dir("strrnn", appauthor=False))


def data_root() -> Path:
    """The folder holding every data set's folder: ``$STRRNN_DATA`` or :func:`user_data_dir`."""
    return _env_path("STRRNN_DATA") or user_data_dir()


def env_var(name: str) -> str | None:
    """The environment variable that names the folder of dataset ``name`` (``None`` if it has none)."""
    return ENV_VARS.get(FOLDERS.get(name, name))


def dataset_dir(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name`` (a registry name such as ``google12`` or a folder such as
    ``speech_commands_v0.02``): ``explicit`` > its environment variable > ``$STRRNN_DATA/<folder>`` >
    ``<user data dir>/<folder>``."""
    if explicit is not None and str(explicit) != "":
        return Path(os.path.expanduser(str(explicit)))
    folder = FOLDERS.get(name, name)
    variable = ENV_VARS.get(folder)
    own = _env_path(variable) if variable else None
    return own or data_root() / folder
