"""A project's own configuration (its mcp.json and profiles) does nothing until trusted: a
cloned repository cannot start programs, grant itself permissions or point the provider
elsewhere because ``amplifier`` ran in it."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import amplifier
from amplifier.agents import AgentWarning, ProfileCatalog, check_mcp_servers
from amplifier.agents._trust import (
    RECORD_FILE,
    ProjectTrust,
    revoke_trust,
    trust_project,
    untrusted_note,
)

from .test_cli_act import amplifier as run_cli
from .test_cli_act import tool
from .test_cli_interactive import interactive
from .trusted import trusted

pytestmark = pytest.mark.anyio

BASH_ALLOWED = "permissions:\n  allow: [bash]\n"


def _server(project: Path, name: str, marker: str) -> None:
    """A stdio server in the project's mcp.json that leaves ``marker`` when it is started."""
    path = project / ".amplifier" / "mcp.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    servers = json.loads(path.read_text())["mcpServers"] if path.exists() else {}
    servers[name] = {"command": "sh", "args": ["-c", f"touch {marker}"], "startup_timeout": 5}
    path.write_text(json.dumps({"mcpServers": servers}))


def _profile(project: Path, name: str, text: str) -> None:
    folder = project / ".amplifier" / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)


async def _bash(project: Path, home: Path, command: str, **options: object) -> None:
    """One turn whose model asks to run ``command`` (nobody answers a question)."""
    async with amplifier.open_runtime(home=home, cwd=project, durability="none", **options) as rt:
        async with rt.open_session() as session:
            await session.ask(tool("bash", command=command))


async def test_a_projects_configuration_does_nothing_until_trusted(
    home: Path, project: Path
) -> None:
    """Untrusted: the project's server never starts and its profile's grant of bash is not
    used (the call asks, and nobody answers); trusted, both act; a pull that changes the
    mcp.json takes its trust back and leaves the profile's."""
    _server(project, "setup", "server-started")
    _profile(project, "base", BASH_ALLOWED)
    with pytest.warns(amplifier.ConfigWarning, match="not trusted: .amplifier/mcp.json"):
        await _bash(project, home, "touch ran")
    assert not (project / "server-started").exists()
    assert not (project / "ran").exists()

    trusted(project)
    with pytest.warns(AgentWarning, match="setup"):  # it starts, then exits: not a server
        await _bash(project, home, "touch ran")
    assert (project / "server-started").exists()
    assert (project / "ran").exists()

    _server(project, "pulled", "pulled-started")  # someone else's change, pulled in
    (project / "server-started").unlink()
    with pytest.warns(amplifier.ConfigWarning, match="changed since .*: .amplifier/mcp.json \\("):
        await _bash(project, home, "touch ran-again")
    assert not (project / "pulled-started").exists()
    assert not (project / "server-started").exists()
    assert (project / "ran-again").exists()  # the profile's grant is still trusted


async def test_a_program_vouches_for_its_project_or_leaves_it_out(
    home: Path, project: Path
) -> None:
    """``trust_project=True`` uses the files without a record, ``False`` leaves them out
    without a word."""
    _profile(project, "base", BASH_ALLOWED)
    await _bash(project, home, "touch refused", trust_project=False)
    assert not (project / "refused").exists()
    await _bash(project, home, "touch vouched", trust_project=True)
    assert (project / "vouched").exists()
    assert not (home / RECORD_FILE).exists()


async def test_mcp_list_reports_an_untrusted_project_without_starting_it(
    home: Path, project: Path
) -> None:
    _server(project, "setup", "server-started")
    report = await check_mcp_servers(home=home, cwd=project)
    assert report.servers == ()
    assert ".amplifier/mcp.json" in (report.untrusted or "")
    assert not (project / "server-started").exists()


def test_the_record_is_owner_only_and_follows_each_files_content(
    home: Path, project: Path, tmp_path: Path
) -> None:
    _profile(project, "work", "max_rounds: 3\n")
    _profile(project, "other", "max_rounds: 4\n")
    assert [p.name for p in ProjectTrust.of(project, home=home).refused()] == [
        "other.yaml", "work.yaml"
    ]
    trusted_files = trust_project(project, home=home)
    assert [p.name for p in trusted_files] == ["other.yaml", "work.yaml"]
    assert stat.S_IMODE((home / RECORD_FILE).stat().st_mode) == 0o600
    assert ProjectTrust.of(project, home=home).refused() == []
    # The same project reached through a link is the same project.
    link = tmp_path / "link"
    link.symlink_to(project)
    assert ProjectTrust.of(link, home=home).refused() == []
    # A file removed takes only itself; a file changed is refused, alone.
    (project / ".amplifier" / "profiles" / "other.yaml").unlink()
    assert ProjectTrust.of(project, home=home).refused() == []
    _profile(project, "work", "max_rounds: 30\n")
    refused = ProjectTrust.of(project, home=home).refused()
    assert [p.name for p in refused] == ["work.yaml"]
    assert revoke_trust(project, home=home)
    assert not revoke_trust(project, home=home)


def test_a_damaged_record_trusts_nothing_says_so_and_is_kept_aside(
    home: Path, project: Path
) -> None:
    _profile(project, "work", "max_rounds: 3\n")
    home.mkdir(parents=True, exist_ok=True)
    damaged = '{"projects": {"' + str(project) + '": '
    (home / RECORD_FILE).write_text(damaged)
    trust = ProjectTrust.of(project, home=home)
    assert len(trust.refused()) == 1
    assert "cannot be read" in (untrusted_note(trust) or "")
    with pytest.warns(amplifier.ConfigWarning, match="could not be read.*kept as"):
        trust_project(project, home=home)
    assert ProjectTrust.of(project, home=home).refused() == []
    (kept,) = home.glob(f"{RECORD_FILE}.*")
    assert kept.read_text() == damaged


def test_trusts_at_once_are_all_kept(home: Path, tmp_path: Path) -> None:
    """Twenty projects trusted at the same moment (a lock orders the record's rewrites)."""
    projects = []
    for n in range(20):
        projects.append(tmp_path / f"p{n}")
        _profile(projects[-1], "work", f"max_rounds: {n + 1}\n")
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda project: trust_project(project, home=home), projects))
    assert all(ProjectTrust.of(project, home=home).refused() == [] for project in projects)


def test_a_home_inside_the_project_is_still_the_persons_own(project: Path) -> None:
    """``AMPLIFIER_HOME=./home``: its profiles are the home's, whatever folder holds it."""
    home = project / "home"
    (home / "profiles").mkdir(parents=True)
    (home / "profiles" / "mine.yaml").write_text("max_rounds: 3\n")
    assert ProfileCatalog.load(home=home, project=project).get("mine").max_rounds == 3


def test_the_home_itself_needs_no_trust(tmp_path: Path) -> None:
    """Run from the folder that holds the home (``~`` with ``~/.amplifier``): its files are
    the person's own."""
    user = tmp_path / "me"
    (user / ".amplifier" / "profiles").mkdir(parents=True)
    (user / ".amplifier" / "profiles" / "mine.yaml").write_text("max_rounds: 3\n")
    assert ProjectTrust.of(user, home=user / ".amplifier").refused() == []


def test_without_a_terminal_the_files_are_left_out_with_one_warning(
    home: Path, project: Path
) -> None:
    """Piped: nothing is asked; the project's profile is unknown until ``amplifier trust``."""
    _profile(project, "work", "max_rounds: 3\n")
    refused = run_cli("run", "--profile", "work", "hi", cwd=project, home=home, code=2)
    assert refused.stderr.count("not trusted: .amplifier/profiles/work.yaml") == 1
    assert "'amplifier trust'" in refused.stderr
    assert "unknown profile 'work'" in refused.stderr
    assert "profiles/work.yaml is the project's, not trusted" in refused.stderr

    said = run_cli("trust", cwd=project, home=home)
    assert ".amplifier/profiles/work.yaml" in said.stdout
    ran = run_cli("run", "--profile", "work", "hi", cwd=project, home=home)
    assert "Warning" not in ran.stderr
    assert json.loads(run_cli("trust", "--revoke", "--json", cwd=project, home=home).stdout) == {
        "project": str(project), "trusted": False, "files": []
    }
    again = run_cli("run", "hi", cwd=project, home=home)
    assert "not trusted" in again.stderr
    # Managing sessions runs no agent: the project's configuration is not its business.
    listed = run_cli("session", "list", cwd=project, home=home)
    assert "trust" not in listed.stderr


def test_mcp_list_says_what_it_left_out_and_no_more(home: Path, project: Path) -> None:
    _server(project, "setup", "server-started")
    done = run_cli("mcp", "list", cwd=project, home=home)
    assert "left out, not trusted: .amplifier/mcp.json" in done.stderr
    assert "No MCP server is configured" not in done.stderr
    assert not (project / "server-started").exists()


def test_trust_names_a_file_whose_name_is_not_utf8(home: Path, project: Path) -> None:
    folder = project / ".amplifier" / "profiles"
    folder.mkdir(parents=True)
    (folder / os.fsdecode(b"bad\xff.yaml")).write_text("max_rounds: 3\n")
    done = run_cli("trust", "--json", cwd=project, home=home)
    assert json.loads(done.stdout)["files"] == [".amplifier/profiles/bad\\udcff.yaml"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_at_a_terminal_the_person_is_asked_once(home: Path, project: Path, backend: str) -> None:
    """The question names each file and what the mcp.json runs; no leaves the files out and
    asks again next time; yes is kept, and the next command asks nothing."""
    _server(project, "setup", "server-started")
    _profile(project, "base", BASH_ALLOWED)
    with interactive(["run", "hi"], cwd=project, home=home, backend=backend) as term:
        term.see("This project has its own Amplifier configuration")
        term.see('"args": ["-c", "touch server-started"]')  # each file whole, as written
        term.see("| permissions:")
        term.see("Trust these files as shown?")
        term.send("n")
        term.see("left out, not trusted")
        assert term.leave() == 0
    assert not (home / RECORD_FILE).exists()
    assert not (project / "server-started").exists()

    with interactive(
        ["run", tool("bash", command="touch ran")], cwd=project, home=home, backend=backend
    ) as term:
        term.see("Trust these files as shown?")
        term.send("y")
        term.see("Trusted 2 file(s)")
        assert term.leave() == 0
    assert (project / "ran").exists()  # the profile's grant: no question for bash
    assert (project / "server-started").exists()

    with interactive(["run", "hi"], cwd=project, home=home, backend=backend) as term:
        assert term.leave() == 0
        assert "Trust these files" not in term.output


def test_ctrl_c_at_the_question_runs_nothing(home: Path, project: Path) -> None:
    _profile(project, "base", BASH_ALLOWED)
    with interactive(
        ["run", tool("bash", command="touch ran")], cwd=project, home=home, backend="trio"
    ) as term:
        term.see("Trust these files as shown?")
        term.child.sendintr()
        term.see("nothing ran")
        assert term.leave() == 130
    assert not (project / "ran").exists()
    assert not (home / RECORD_FILE).exists()
    assert not list(home.rglob("metadata.json"))


def test_trust_in_a_home_that_cannot_hold_it_is_one_error(
    home: Path, project: Path, tmp_path: Path
) -> None:
    _profile(project, "work", "max_rounds: 3\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    done = run_cli("trust", cwd=project, home=blocked / "home", code=1)
    assert done.stderr.startswith("Error: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_question_shows_what_would_hide_and_trusts_only_what_it_showed(
    home: Path, project: Path
) -> None:
    """A profile's line breaks, escape sequences and bidirectional marks are shown escaped,
    never acted on; a file changed while the question waits is not what the yes trusts."""
    _profile(project, "shown", "description: 3\r\x1b[2Kmax_rounds: 4 # \u202e\n")
    _server(project, "setup", "server-started")
    with interactive(["run", "hi"], cwd=project, home=home, backend="asyncio") as term:
        term.see("Trust these files as shown?")
        assert "| description: 3\\x0d\\x1b[2Kmax_rounds: 4 # \\u202e" in term.output
        assert "\x1b[2K" not in term.output
        _server(project, "swapped", "swapped-started")  # while the person reads
        term.send("y")
        term.see("new or changed since the project was trusted: .amplifier/mcp.json")
        assert term.leave() == 0
    assert not (project / "server-started").exists()
    assert not (project / "swapped-started").exists()
    assert ProjectTrust.of(project, home=home).refused()[0].name == "mcp.json"
