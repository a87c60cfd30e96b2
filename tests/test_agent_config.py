"""Agent specs and profiles: where they come from, which wins, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

import amplifier
from amplifier import ConfigError, UnknownProfile
from amplifier.agents import (
    AgentCatalog,
    Bash,
    DelegateTool,
    ProfileCatalog,
    ToolBox,
    file_tools,
    load_profile,
    parse_spec,
    write_tools,
)

from .trusted import trusted

SPEC = "---\nname: {name}\ndescription: {description}\ntools: [read_file]\n---\nDo {name} things.\n"


def _write_spec(folder: Path, name: str, description: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(SPEC.format(name=name, description=description))


def test_builtin_agents_are_default_explorer_and_reviewer(tmp_path: Path) -> None:
    """A fresh install offers the three built-in agents, with instructions."""
    catalog = AgentCatalog.load(home=tmp_path / "home", project=tmp_path)
    assert catalog.names == ["default", "explorer", "reviewer"]
    assert catalog["explorer"].instructions.startswith("You explore")


def test_default_agent_acts_and_explorer_and_reviewer_only_look(tmp_path: Path) -> None:
    """default may write, edit, run commands and delegate; explorer and reviewer only read."""
    catalog = AgentCatalog.load(home=tmp_path / "home", project=tmp_path)
    delegate = DelegateTool(catalog, child_timeout=lambda context: None)
    tools = ToolBox([*file_tools(), *write_tools(), Bash(), delegate])
    read_only = ["glob", "grep", "list_dir", "read_file"]
    assert tools.only(catalog["default"].tools).names == sorted(
        [*read_only, "bash", "delegate", "edit_file", "write_file"]
    )
    assert tools.only(catalog["explorer"].tools).names == read_only
    assert tools.only(catalog["reviewer"].tools).names == read_only


def test_project_spec_overrides_user_spec_overrides_builtin(tmp_path: Path) -> None:
    """The same name in ~/.amplifier/agents and <project>/.amplifier/agents: the project's wins."""
    home, project = tmp_path / "home", tmp_path / "project"
    _write_spec(home / "agents", "explorer", "from the user")
    _write_spec(home / "agents", "helper", "user only")
    _write_spec(project / ".amplifier" / "agents", "explorer", "from the project")
    catalog = AgentCatalog.load(home=home, project=project)
    assert catalog["explorer"].description == "from the project"
    assert catalog["helper"].description == "user only"
    assert catalog["reviewer"].source == "built-in:reviewer.md"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\n---\n", 1, "starts with a '---' line"),
        ("---\nname: x\n", 2, "not closed"),
        ("---\nname: x\ntools: [read_file\n---\n", 3, "invalid front matter"),
        ("---\nname: x\ndescription: ok\ntools: 7\n---\n", 4, "tools:"),
        ("---\nname: x\ncolour: blue\n---\n", 3, "colour: Extra inputs are not permitted"),
        ("---\nname: bad/name\n---\n", 2, "name: String should match"),
    ],
)
def test_malformed_spec_error_names_file_and_line(text: str, line: int, message: str) -> None:
    """A broken agent spec is reported as path:line: what is wrong."""
    with pytest.raises(ConfigError, match=message) as caught:
        parse_spec(text, source=Path("/p/.amplifier/agents/x.md"))
    assert str(caught.value).startswith(f"/p/.amplifier/agents/x.md:{line}: ")


def test_broken_spec_is_left_out_and_asking_for_it_names_its_location(tmp_path: Path) -> None:
    """A broken spec file leaves the other agents usable; asking for it says path:line."""
    folder = tmp_path / ".amplifier" / "agents"
    folder.mkdir(parents=True)
    (folder / "broken.md").write_text("---\nname: [oops\n---\n")
    catalog = AgentCatalog.load(home=tmp_path / "home", project=tmp_path)
    assert catalog.names == ["default", "explorer", "reviewer"]
    assert [str(p) for p in catalog.problems] == [str(catalog.problems[0])]
    with pytest.raises(ConfigError, match=r"broken\.md:2: invalid front matter"):
        catalog["broken"]


def test_builtin_profiles_are_base_and_dev(tmp_path: Path) -> None:
    """base is the offline default; dev extends it with more room."""
    catalog = ProfileCatalog.load(home=tmp_path / "home", project=tmp_path)
    assert catalog.names == ["base", "dev"]
    base, dev = catalog.get("base"), catalog.get("dev")
    assert (base.provider.kind, base.agent, base.durability) == ("offline", "default", "fsync")
    assert dev.provider.kind == "offline"
    assert dev.max_rounds > base.max_rounds


def test_user_profile_extends_a_builtin_and_project_wins(tmp_path: Path) -> None:
    """A profile file merges over what it extends; a project profile beats a user one."""
    home, project = tmp_path / "home", tmp_path / "project"
    (home / "profiles").mkdir(parents=True)
    (home / "profiles" / "work.yaml").write_text(
        "extends: dev\nprovider: {kind: openai, model: gpt-4o, base_url: 'http://127.0.0.1:1/v1'}\n"
    )
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "work.yaml").write_text(
        "extends: dev\nagent: explorer\ncontext_window: 4096\n"
    )
    trusted(project, home)
    work = ProfileCatalog.load(home=home, project=project).get("work")
    assert (work.agent, work.context_window, work.provider.kind) == ("explorer", 4096, "offline")
    assert work.max_rounds == 48  # from dev


def test_unknown_profile_lists_the_available_ones(tmp_path: Path) -> None:
    """--profile with a typo names the profiles that exist."""
    with pytest.raises(UnknownProfile, match="unknown profile 'prod'; available: base, dev"):
        load_profile("prod", home=tmp_path / "home", cwd=tmp_path)


def test_invalid_profile_names_its_file(tmp_path: Path) -> None:
    """A profile with a wrong field type is reported with its path."""
    (tmp_path / ".amplifier" / "profiles").mkdir(parents=True)
    path = tmp_path / ".amplifier" / "profiles" / "odd.yaml"
    path.write_text("max_rounds: many\n")
    trusted(tmp_path, tmp_path / "home")
    with pytest.raises(
        ConfigError, match=r"odd\.yaml: max_rounds: Input should be a valid integer"
    ):
        load_profile("odd", home=tmp_path / "home", cwd=tmp_path)


def test_provider_and_model_overrides_apply_on_top_of_the_profile(tmp_path: Path) -> None:
    """--provider/--model replace the profile's provider for this run only."""
    profile = load_profile("dev", home=tmp_path, cwd=tmp_path, provider="openai", model="gpt-x")
    assert (profile.provider.kind, profile.provider.model, profile.name) == (
        "openai",
        "gpt-x",
        "dev",
    )


async def test_resume_takes_the_profile_and_provider_as_they_are_now(
    home: Path, tmp_path: Path
) -> None:
    """A session resumed under another profile runs with that profile, and the log says so."""
    project = tmp_path / "p"
    project.mkdir()
    async with amplifier.open_runtime(cwd=project, profile="base") as rt:
        async with rt.open_session() as session:
            await session.ask("hi")
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.resume(session.id, profile="dev") as again:
            assert again.metadata.profile == "dev"
            await again.ask("again")
    (resumed,) = [e async for e in _events(project, session.id) if e.event == "session:resume"]
    assert resumed.data["previous_config"] == {
        "profile": "base",
        "provider": "offline",
        "model": "offline",
    }
    assert resumed.data["config"] == {"profile": "dev", "provider": "offline", "model": "offline"}


async def _events(project: Path, session_id: str):  # type: ignore[no-untyped-def]
    async with amplifier.open_runtime(cwd=project) as rt:
        async for event in rt.events(session_id):
            yield event
