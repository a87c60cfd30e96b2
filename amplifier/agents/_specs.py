"""Agent specs: Markdown files with YAML front matter; the body is the instructions.

    ---
    name: explorer
    description: Reads and summarises files
    tools: [read_file, list_dir, glob, grep]
    agents: []                 # the agents it may delegate to
    provider: openai           # optional: overrides the profile's provider kind
    model: gpt-5.4-mini        # optional: overrides the profile's model
    ---
    You explore a code base ...

Found, in rising precedence: the built-ins shipped with Amplifier,
``$AMPLIFIER_HOME/agents/*.md``, and ``<project>/.amplifier/agents/*.md``;
a spec of the same name higher up replaces the one below.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._config_text import read_config_text
from ._exceptions import AgentWarning, ConfigError, UnknownAgent
from ._provider_config import ProviderKind
from ._yaml import YamlProblem, load_yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AgentSpec(BaseModel):
    """What an agent is: its instructions, tools, and whom it may delegate to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern)
    description: str = ""
    tools: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    """Agents this one may delegate to (needs the ``delegate`` tool too)."""
    provider: ProviderKind | None = None
    model: str | None = None
    instructions: str = ""
    source: str = "built-in"
    """Where the spec was read from (a path, ``built-in``, or ``python``)."""

    @classmethod
    def from_markdown(cls, text: str, *, source: str = "python") -> AgentSpec:
        """A spec from Markdown with YAML front matter, as agent files are written.

        Raises ``ConfigError`` saying what is wrong, and on which line.
        """
        return parse_spec(text, source=source)


def parse_spec(text: str, *, source: Path | str) -> AgentSpec:
    """An ``AgentSpec`` from a spec file's text; ``ConfigError`` naming file and line otherwise."""
    path = Path(source) if not isinstance(source, Path) else source
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ConfigError(
            "an agent spec starts with a '---' line of YAML front matter", path=path, line=1
        )
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ConfigError(
            "the front matter is not closed by a '---' line", path=path, line=len(lines)
        ) from None
    front = "\n".join(lines[1:end])
    try:
        fields = load_yaml(front) or {}
    except YamlProblem as exc:
        line = exc.line + 1 if exc.line is not None else 1  # below the opening '---'
        raise ConfigError(f"invalid front matter: {exc.problem}", path=path, line=line) from None
    if not isinstance(fields, dict):
        raise ConfigError("the front matter must be a mapping of fields", path=path, line=2)
    body = "\n".join(lines[end + 1 :]).strip()
    try:
        return AgentSpec.model_validate({**fields, "instructions": body, "source": str(source)})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        raise ConfigError(
            f"{key or 'front matter'}: {error['msg']}", path=path, line=_line_of(lines[:end], key)
        ) from None


def _line_of(front: list[str], key: str) -> int:
    for number, line in enumerate(front, start=1):
        if line.startswith(f"{key}:"):
            return number
    return 1


class AgentCatalog:
    """Every agent spec available to a project, by name.

    A spec file that cannot be used (``broken``: by the name its file
    gives, its stem) is left out: asking for that agent raises the file's
    error, and the other agents work (``problems`` lists them all).
    """

    def __init__(
        self, specs: Iterable[AgentSpec], broken: Mapping[str, ConfigError] | None = None
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._broken = {
            name: error for name, error in (broken or {}).items() if name not in self._specs
        }

    def with_specs(self, specs: Iterable[AgentSpec]) -> AgentCatalog:
        """These specs added; one replacing a file's (or a built-in) of its name says so."""
        merged = dict(self._specs)
        for spec in specs:
            replaced = merged.get(spec.name)
            if replaced is not None:
                warnings.warn(
                    f"agent {spec.name!r} given to open_runtime replaces the one from "
                    f"{replaced.source}",
                    AgentWarning,
                    stacklevel=3,
                )
            merged[spec.name] = spec
        return AgentCatalog(merged.values())

    def __getitem__(self, name: str) -> AgentSpec:
        try:
            return self._specs[name]
        except KeyError:
            if name in self._broken:
                raise self._broken[name] from None
            raise UnknownAgent(name, self.names) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def names(self) -> list[str]:
        return sorted(self._specs)

    @property
    def specs(self) -> list[AgentSpec]:
        return [self._specs[name] for name in self.names]

    @property
    def problems(self) -> list[ConfigError]:
        """Why each spec file left out is unusable (``path:line: what is wrong``)."""
        return [self._broken[name] for name in sorted(self._broken)]

    def known(self, name: str) -> bool:
        """There is a spec of that name, usable or not."""
        return name in self._specs or name in self._broken

    def set_aside(self, name: str, error: ConfigError) -> None:
        """Leave the agent ``name`` out: asking for it raises ``error`` from now on."""
        self._specs.pop(name, None)
        self._broken[name] = error

    @classmethod
    def load(cls, *, home: Path, project: Path) -> AgentCatalog:
        """Built-ins, then ``home/agents``, then ``project/.amplifier/agents`` (later wins).

        A file that cannot be read or parsed takes the place of the agent its
        name (its stem) would have been, as a broken one (see the class).
        """
        specs: dict[str, AgentSpec] = {}
        broken: dict[str, ConfigError] = {}
        for spec in builtin_specs():
            specs[spec.name] = spec
        for folder in (home / "agents", project / ".amplifier" / "agents"):
            for path, loaded in _specs_in(folder):
                if isinstance(loaded, ConfigError):
                    specs.pop(path.stem, None)
                    broken[path.stem] = loaded
                else:
                    broken.pop(loaded.name, None)
                    specs[loaded.name] = loaded
        return cls(specs.values(), broken)


def builtin_specs() -> list[AgentSpec]:
    folder = resources.files("amplifier.agents") / "builtin" / "agents"
    return [
        parse_spec(entry.read_text(encoding="utf-8"), source=f"built-in:{entry.name}")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".md")
    ]


def _specs_in(folder: Path) -> list[tuple[Path, AgentSpec | ConfigError]]:
    """Each spec file of ``folder``, parsed, or the error that says why it cannot be."""
    if not folder.is_dir():
        return []
    specs: list[tuple[Path, AgentSpec | ConfigError]] = []
    for path in sorted(folder.glob("*.md")):
        try:
            text = read_config_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            specs.append((path, ConfigError(f"cannot read agent spec: {exc}", path=path)))
            continue
        try:
            specs.append((path, parse_spec(text, source=path)))
        except ConfigError as exc:
            specs.append((path, exc))
    return specs
