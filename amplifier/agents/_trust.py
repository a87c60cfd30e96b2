"""Whether a project's own configuration is used: the trust record.

A project's ``.amplifier/mcp.json`` starts programs (its stdio servers) and
sends the user's variables where it says (its HTTP servers' headers); a
project profile can grant tools their permissions, load Python tools and
point the provider, with the user's API key, at another address. A
repository someone else wrote must not do that because ``amplifier`` ran in
it. A person trusts a project once (at a terminal, or ``amplifier trust``);
a program vouches for its project with ``open_runtime(trust_project=True)``.

Rule 1: what needs trust is the project's ``mcp.json`` and its profiles
        (``.amplifier/profiles/*.yaml``, ``*.yml``). Its agent specs need none:
        a spec names tools and a provider kind, and every call of a tool that
        changes something still passes the permission check.
Rule 2: ``$AMPLIFIER_HOME/trusted-projects.json`` records, for each trusted
        project folder (resolved), the SHA-256 of each such file as it was
        trusted. A file is used only if its text, as read to be used, has its
        recorded digest: a pull that adds a server, or a command that edits a
        profile, takes that file's trust back until it is given again. A file
        removed since takes nothing with it.
Rule 3: a project whose ``.amplifier`` is the home itself needs no trust.
Rule 4: the record is owner-only, replaced whole (atomically), one process
        at a time (a lock beside it). A record that cannot be read trusts
        nothing, and says so; the next trust keeps it aside and begins anew.
Rule 5: what is trusted is what was read to be shown: the question's files
        are recorded by the digests of the texts it showed. Trust covers these
        files, not the programs they name (a server's script that a pull
        changes is not asked about again).
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from amplifier.persistence import utc_now
from amplifier.persistence.lowlevel import (
    atomic_replace,
    content_digest,
    ensure_private_dir,
)

from ._config_text import read_config_text
from ._exceptions import ConfigWarning

RECORD_FILE = "trusted-projects.json"
LOCK_FILE = ".trusted-projects.lock"
_PROFILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class ProjectTrust:
    """Which of a project's configuration files may be used (Rule 2)."""

    project: Path
    everything: bool = False
    """The whole project is trusted: a program vouches for it, or it is the home (Rule 3)."""
    digests: Mapping[str, str] = field(default_factory=dict)
    """The digest each file had when trusted, by its path relative to the project."""
    recorded: bool = False
    """The record names the project (some of its files changed since, if any is refused)."""
    problem: str | None = None
    """Why the record could not be read, if it could not (then it trusts nothing)."""

    @classmethod
    def of(cls, project: Path, *, home: Path, trust: bool | None = None) -> ProjectTrust:
        """``trust`` True: everything; False: nothing; None: as the home's record says."""
        if trust is not None:
            return cls(project, everything=trust)
        if _same_folder(project / ".amplifier", home):
            return cls(project, everything=True)
        try:
            entry = _read_record(home).get(_key(project))
        except DamagedRecord as exc:
            return cls(project, problem=str(exc))
        if entry is None:
            return cls(project)
        return cls(project, digests=_digests(entry), recorded=True)

    def admits(self, path: Path, text: str) -> bool:
        """Whether the file at ``path``, read as ``text``, may be used."""
        if self.everything or not path.is_relative_to(self.project / ".amplifier"):
            return True  # not the project's: the home's own (which may lie in the project)
        relative = str(path.relative_to(self.project))
        return self.digests.get(relative) == content_digest(text.encode())

    def refused(self) -> list[Path]:
        """The project's configuration files this trust leaves out, as they read now."""
        return [path for path, text in configuration(self.project) if not self.admits(path, text)]


async def read_trust(
    project: Path, *, home: Path, trust: bool | None, noted: bool = True
) -> tuple[ProjectTrust, str | None]:
    """``ProjectTrust.of`` and (if ``noted``) its ``untrusted_note``, read together in one
    worker thread."""

    def read() -> tuple[ProjectTrust, str | None]:
        found = ProjectTrust.of(project, home=home, trust=trust)
        return found, untrusted_note(found) if noted else None

    return await anyio.to_thread.run_sync(read)


async def settled(project: Path, *, home: Path, trust: bool | None) -> ProjectTrust:
    """``read_trust``; with ``trust`` None (the record decides), one ``ConfigWarning``
    naming what it leaves out."""
    found, note = await read_trust(project, home=home, trust=trust, noted=trust is None)
    if note is not None:
        warnings.warn(note, ConfigWarning, stacklevel=3)
    return found


def untrusted_note(trust: ProjectTrust) -> str | None:
    """What the project's files that ``trust`` leaves out are, and how to trust them; None if
    it leaves none out."""
    refused = trust.refused()
    if not refused:
        return None
    files = ", ".join(str(path.relative_to(trust.project)) for path in refused)
    why = "new or changed since the project was trusted" if trust.recorded else "not trusted"
    damaged = f"; the trust record {trust.problem}" if trust.problem else ""
    return (
        f"the project's own configuration is left out, {why}: {files} (it can start "
        f"programs and grant tools permissions; 'amplifier trust' in {trust.project} "
        f"trusts it as it is now{damaged})"
    )


def configuration(project: Path) -> list[tuple[Path, str]]:
    """The project's files that need trust (Rule 1) and their text; unreadable ones are not
    listed (they are left out as unusable, naming why, wherever they are loaded)."""
    folder = project / ".amplifier"
    candidates = [folder / "mcp.json"]
    profiles = folder / "profiles"
    if profiles.is_dir():
        candidates += sorted(p for p in profiles.iterdir() if p.suffix in _PROFILE_SUFFIXES)
    found: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            found.append((path, read_config_text(path)))
        except (OSError, UnicodeDecodeError):
            continue
    return found


def trust_project(
    project: Path, *, home: Path, files: list[tuple[Path, str]] | None = None
) -> list[Path]:
    """Record ``files`` (default: the project's configuration as it reads now) as trusted,
    each by the digest of the text given: what a person was shown is what is trusted, even
    if a file changed since (Rule 2). The files trusted."""
    files = configuration(project) if files is None else files
    with _locked(home):
        record = _read_record(home, set_aside_damaged=True)
        record[_key(project)] = {
            "files": {
                str(path.relative_to(project)): content_digest(text.encode())
                for path, text in files
            },
            "trusted_at": utc_now().isoformat(),
        }
        _write_record(home, record)
    return [path for path, _ in files]


def revoke_trust(project: Path, *, home: Path) -> bool:
    """Forget the project's trust; False if it had none."""
    with _locked(home):
        record = _read_record(home, set_aside_damaged=True)
        if record.pop(_key(project), None) is None:
            return False
        _write_record(home, record)
    return True


def _key(project: Path) -> str:
    return str(project.resolve())


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


Entry = dict[str, object]
"""A project's record: ``files`` (digests by relative path) and ``trusted_at``."""


class DamagedRecord(Exception):
    """The record cannot be read; the message says why."""


def _read_record(home: Path, *, set_aside_damaged: bool = False) -> dict[str, Entry]:
    """The record's projects; none if there is no record. A damaged one raises
    ``DamagedRecord``, or, with ``set_aside_damaged``, is moved aside (kept, with a
    ``ConfigWarning`` naming where) to be replaced (Rule 4)."""
    path = home / RECORD_FILE
    try:
        document = json.loads(read_config_text(path))
        projects = document.get("projects") if isinstance(document, dict) else None
        if not isinstance(projects, dict):
            raise ValueError('no "projects" object')
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if not set_aside_damaged:
            raise DamagedRecord(f"{path} cannot be read ({exc}): it trusts nothing") from None
        aside = path.with_name(f"{path.name}.damaged-{utc_now():%Y%m%dT%H%M%S%fZ}")
        os.replace(path, aside)
        warnings.warn(
            f"the trust record {path} could not be read ({exc}); it is kept as {aside}, and a "
            "new one begun: projects trusted before must be trusted again",
            ConfigWarning,
            stacklevel=3,
        )
        return {}
    return {
        str(key): entry
        for key, entry in projects.items()
        if isinstance(entry, dict) and isinstance(entry.get("files"), dict)
    }


def _digests(entry: Entry) -> dict[str, str]:
    files = entry.get("files")
    assert isinstance(files, dict)
    return {str(k): str(v) for k, v in files.items()}


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """The record's read-modify-write, one process at a time (two trusts at once both kept)."""
    ensure_private_dir(home, below=home)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_record(home: Path, record: Mapping[str, Entry]) -> None:
    document = {"version": 1, "projects": dict(record)}
    data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    atomic_replace(os.fspath(home / RECORD_FILE), data, sync=True)
