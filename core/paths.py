"""Where LoRA Lab keeps its files.

Everything the app writes (runs, downloaded datasets and weights) lives under one folder, so a
teacher can find it, copy it to a classroom laptop, or delete it. Shipped files (pretrained
weights, model cards) live in the repository's `assets/` folder.
"""

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

ASSETS: Path = Path(__file__).resolve().parent.parent / "assets"


class OfflineError(RuntimeError):
    """A download was needed and failed.

    `str(error)` is the student-facing message: what was missing, where it was looked for and
    how to put it there. The UI shows it as-is instead of a traceback.
    """


class FolderError(ValueError):
    """A folder LoRA Lab keeps its files in cannot be made (the path is a file, say);
    `str(error)` names the folder, the setting that chose it and what to do."""


def home() -> Path:
    """The app's folder: `$LORA_LAB_HOME`, or `~/.lora-lab`; created on first use."""
    return _folder(os.environ.get("LORA_LAB_HOME") or Path.home() / ".lora-lab", "LORA_LAB_HOME")


def data_dir() -> Path:
    """Where downloaded datasets and weights go: `$LORA_LAB_DATA`, or `home()/data`."""
    configured = os.environ.get("LORA_LAB_DATA")
    return _folder(configured or home() / "data", "LORA_LAB_DATA")


def _folder(path: str | Path, setting: str) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = "it is a file" if path.exists() and not path.is_dir() else error.strerror
        raise FolderError(
            f"LoRA Lab cannot keep its files in {path} ({why}): set {setting} to a folder "
            "it can write to"
        ) from None
    return path


def require_network(url: str, offline_message: str, timeout: float = 3.0) -> None:
    """Raise `OfflineError(offline_message)` unless `url`'s server answers within `timeout` s.

    Library downloaders can wait minutes for a network that silently drops packets; a short
    connection test first means an offline classroom gets the explanation at once. Setting
    `LORA_LAB_OFFLINE=1` skips downloads altogether.
    """
    if os.environ.get("LORA_LAB_OFFLINE") == "1":
        raise OfflineError(offline_message)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise OfflineError(offline_message) from error
