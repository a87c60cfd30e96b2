"""Shell completion of what the commands name: sessions, agents, profiles.

``amplifier --install-completion`` installs typer's completion for the
shell; these functions give the values of the arguments and options that
name a session (its id, or its name), an agent or a profile.

Rule 1: completion never fails loudly: the shell calls it on every Tab, and
        a broken file or a missing store gives fewer candidates, never a
        traceback in the middle of the command line.
Rule 2: it reads the store without opening a Runtime: no journal, no claim,
        no recovery, nothing written but the session index's refresh.
"""

from __future__ import annotations

from pathlib import Path

SESSIONS = 200
"""Sessions of this project offered, used last first."""


def _where() -> tuple[Path, Path]:
    from amplifier.persistence import resolve_home_and_cwd

    return resolve_home_and_cwd(None, None)


def complete_session(incomplete: str) -> list[tuple[str, str]]:
    """This project's sessions (sub-sessions too) whose id or name starts with ``incomplete``:
    each id with its name or last prompt, and each name with its id."""
    try:
        from amplifier.persistence import list_sessions, project_slug

        home, cwd = _where()
        rows = list_sessions(home, project_slug(cwd), cwd=str(cwd), limit=SESSIONS, sort="used")
    except Exception:  # Rule 1
        return []
    found: list[tuple[str, str]] = []
    names: list[tuple[str, str]] = []
    for row in rows:
        meta = row.metadata
        about = (meta.name or meta.last_prompt or "") if meta is not None else "damaged"
        if row.session_id.startswith(incomplete):
            found.append((row.session_id, " ".join(about.split())[:60]))
        if meta is not None and meta.name and meta.name.lower().startswith(incomplete.lower()):
            names.append((meta.name, row.session_id))
    return found + names


def complete_agent(incomplete: str) -> list[str]:
    """The agents (built-in, the user's, the project's) whose name starts with ``incomplete``."""
    try:
        from amplifier.agents import AgentCatalog

        home, cwd = _where()
        agents = AgentCatalog.load(home=home, project=cwd).names
    except Exception:  # Rule 1
        return []
    return [name for name in agents if name.startswith(incomplete)]


def complete_profile(incomplete: str) -> list[str]:
    """The profiles (built-in, the user's, the project's) whose name starts with ``incomplete``."""
    try:
        from amplifier.agents import ProfileCatalog

        home, cwd = _where()
        profiles = ProfileCatalog.load(home=home, project=cwd).names
    except Exception:  # Rule 1
        return []
    return [name for name in profiles if name.startswith(incomplete)]
