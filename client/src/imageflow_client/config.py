"""Where the server's URL and the API token are kept: `credentials.json` in the user's config
directory, readable by the user alone (the token is a password's equal)."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
FILE_NAME = "credentials.json"


def config_dir() -> Path:
    """IMAGEFLOW_CONFIG_DIR, else the platform's user config directory."""
    if explicit := os.environ.get("IMAGEFLOW_CONFIG_DIR"):
        return Path(explicit)
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "imageflow"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "imageflow"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "imageflow"


@dataclass
class Credentials:
    url: str
    token: str | None = None
    username: str | None = None


def credentials_path() -> Path:
    return config_dir() / FILE_NAME


def _stored() -> dict:
    path = credentials_path()
    if not path.is_file():
        return {}
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by other users; run `chmod 600 {path}`", file=sys.stderr)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"warning: ignoring {path}: {exc}", file=sys.stderr)
        return {}
    return stored if isinstance(stored, dict) else {}


def credentials_load(url: str | None = None) -> Credentials:
    """The server (`url`, else IMAGEFLOW_URL, else the last one logged in to) and the token
    stored for that server alone: a token is never sent to a server it was not issued by.
    IMAGEFLOW_TOKEN overrides the stored token."""
    stored = _stored()
    url = (url or os.environ.get("IMAGEFLOW_URL") or stored.get("url") or DEFAULT_URL).rstrip("/")
    server = (stored.get("servers") or {}).get(url) or {}
    return Credentials(url=url, token=os.environ.get("IMAGEFLOW_TOKEN") or server.get("token"),
                       username=server.get("username"))


def _write(body: dict) -> Path:
    """Written to a new file created with mode 0600 (never a moment readable by others), then
    renamed over the old one; the directory is made 0700."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        os.chmod(directory, 0o700)
    path = directory / FILE_NAME
    temporary = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(body, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def credentials_save(credentials: Credentials) -> Path:
    """Stores the token for its server (tokens of other servers are kept) and makes that server
    the default."""
    stored = _stored()
    url = credentials.url.rstrip("/")
    servers = dict(stored.get("servers") or {})
    servers[url] = {"token": credentials.token, "username": credentials.username}
    return _write({"url": url, "servers": servers})


def credentials_forget(url: str) -> bool:
    """Forgets the server's token; the file goes with the last one."""
    stored = _stored()
    servers = dict(stored.get("servers") or {})
    if servers.pop(url.rstrip("/"), None) is None:
        return False
    if not servers:
        credentials_path().unlink(missing_ok=True)
        return True
    default = stored.get("url") if stored.get("url") in servers else next(iter(servers))
    _write({"url": default, "servers": servers})
    return True
