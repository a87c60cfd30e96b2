"""Bad input, fuzzed: ids, prompts, agent specs, profiles and damaged session files.

Whatever is typed or found on disk: no traceback, a clear message (one line
on the command line), nothing written outside ``$AMPLIFIER_HOME``, and no
session other than the damaged one affected.

The property tests are derandomized (the same inputs on every CI run). For a
local hunt with fresh inputs: ``AMPLIFIER_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import amplifier
from amplifier import (
    AmbiguousSessionId,
    ConfigError,
    InvalidSessionId,
    RecoveryWarning,
    SessionNotFound,
    TurnFailed,
    UsageError,
)
from amplifier.agents import AgentCatalog, load_profile
from amplifier.cli import app
from amplifier.persistence import validate_session_id
from amplifier.runtime.lowlevel import open_local_runtime as open_core_runtime

from .helpers import lines, session_dirs
from .trusted import trusted

runner = CliRunner()

_LOCAL_EXAMPLES = int(os.environ.get("AMPLIFIER_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """CI settings: the same inputs every run, no deadline, fixtures shared by the examples."""
    return settings(
        max_examples=_LOCAL_EXAMPLES or examples,
        derandomize=not _LOCAL_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain output, and no API key that could send a fuzzed profile onto the network."""
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AMPLIFIER_DEBUG"):
        monkeypatch.delenv(name, raising=False)


# -- shared helpers ----------------------------------------------------------------------

_INDEX = ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "index.sqlite3-journal")


def snapshot(root: Path, *, skip: Callable[[Path], bool] = lambda _: False) -> dict[str, Any]:
    """Every folder, file (bytes and mode) and link under ``root``, by relative path."""
    found: dict[str, Any] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [name for name in dirs if not skip(here / name)]  # not walked into either
        for name in dirs + files:
            path = here / name
            if skip(path):
                continue
            relative = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def outside_index(home: Path) -> Callable[[Path], bool]:
    """Skip the session index: a cache that a lookup may create or update."""
    return lambda path: path.parent == home and path.name in _INDEX


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, one entry per path."""
    return sorted(
        f"{'+' if key not in before else '-' if key not in after else '~'} {key}"
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    )


def invoke(*args: str) -> Result:
    """Run the CLI; a traceback or an exception escaping the command fails the test."""
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    assert "Traceback" not in result.stdout + result.stderr, (args, result.stderr)
    return result


def one_error_line(result: Result) -> str:
    """The one ``Error: ...`` line a failing command prints on stderr."""
    shown = result.stderr.splitlines()
    assert len(shown) == 1, shown
    assert shown[0].startswith("Error: "), shown
    return shown[0]


def make_sessions(project: Path) -> list[str]:
    """Three stored sessions of ``project``: a plain one, and one with a sub-session."""

    async def make() -> list[str]:
        made = []
        async with amplifier.open_runtime(cwd=project, durability="none") as rt:
            for prompt in ("hello", "/delegate explorer: look around"):
                async with rt.open_session() as session:
                    await session.ask(prompt)
                    made.append(session.id)
        return made

    roots = anyio.run(make)
    return roots


@pytest.fixture
def stored(home: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stored session id (two roots, one child); the CLI runs inside the project."""
    monkeypatch.chdir(project)
    make_sessions(project)
    return sorted(session_dirs(home))


# -- 1. ids ------------------------------------------------------------------------------

_ANY_CHAR = st.one_of(
    st.characters(),
    st.characters(max_codepoint=0x7F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
)
_TRICKS = (
    "../",
    "..",
    "/",
    "/etc/passwd",
    "~",
    "~/",
    "./",
    "\\",
    "..\\",
    "$HOME/",
    "%2e%2e%2f",
    "C:\\",
    "\x00",
    ".",
    "-",
    "_",
    " ",
    "\n",
    "\u2028",
    "\uff46\uff55\uff4c\uff4c",  # full-width "full"
    "\u202e",
)
_MUTATIONS: tuple[Callable[[str], str], ...] = (
    lambda s: s + "x",
    lambda s: s + "/",
    lambda s: s + "/../" + s,
    lambda s: s.upper(),
    lambda s: s[:-1] + "g",
    lambda s: "./" + s,
    lambda s: s + "\x00",
    lambda s: s + "\n",
    lambda s: " " + s,
    lambda s: s + "." * 130,
    lambda s: s.replace("-", "/"),
    lambda s: s.replace("T", "\uff34"),
)


def typed_ids(real: list[str]) -> st.SearchStrategy[str]:
    """What a user (or a script) might type where an id goes."""
    return st.one_of(
        st.text(_ANY_CHAR, max_size=40),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,160}", fullmatch=True),
        st.tuples(st.sampled_from(_TRICKS), st.text(_ANY_CHAR, max_size=12)).map("".join),
        st.tuples(st.sampled_from(real), st.sampled_from(_MUTATIONS)).map(lambda t: t[1](t[0])),
        st.sampled_from(["", "..", "...", "a..b", "x" * 129, "x" * 128, "index.sqlite3"]),
    )


def _resolves(text: str, real: list[str]) -> bool:
    """True if ``text`` is a valid id naming (or prefixing) a stored session."""
    try:
        validate_session_id(text)
    except ValueError:
        return False
    return any(session_id.startswith(text) for session_id in real)


_ID_COMMANDS: dict[str, Callable[[str, list[str]], list[str]]] = {
    "show": lambda i, j: ["session", "show", *j, "--", i],
    "resume": lambda i, j: ["session", "resume", *j, "--", i, "hi"],
    "resume-interactive": lambda i, j: ["session", "resume", "--", i],
    "delete": lambda i, j: ["session", "delete", "--yes", *j, "--", i],
    "run --resume": lambda i, j: ["run", f"--resume={i}", *j, "hi"],
}


@fuzz(60)
@given(data=st.data())
def test_typed_id_is_one_error_line_and_touches_nothing(
    data: st.DataObject, stored: list[str], home: Path, tmp_path: Path
) -> None:
    """Any text typed as an id: exit 1 or 2, one 'Error:' line, and no file anywhere changes."""
    text = data.draw(typed_ids(stored), label="id")
    assume(not _resolves(text, stored))
    command = data.draw(st.sampled_from(sorted(_ID_COMMANDS)), label="command")
    as_json = command != "resume-interactive" and data.draw(st.booleans(), label="json")
    before = snapshot(tmp_path, skip=outside_index(home))

    result = invoke(*_ID_COMMANDS[command](text, ["--json"] if as_json else []))

    try:
        validate_session_id(text)
    except InvalidSessionId:
        expected = (2, "Error: invalid session id ")
    else:
        expected = (1, f"Error: Session not found: {text} ")
    assert result.exit_code == expected[0], (result.exit_code, result.stderr)
    assert one_error_line(result).startswith(expected[1])
    if as_json:
        assert json.loads(result.stdout)["exit_code"] == expected[0]
    else:
        assert result.stdout == ""
    assert changes(before, snapshot(tmp_path, skip=outside_index(home))) == []


@fuzz(40)
@given(data=st.data())
async def test_resume_of_a_typed_id_raises_only_id_errors(
    data: st.DataObject, stored: list[str], home: Path, tmp_path: Path, project: Path
) -> None:
    """Runtime.resume(text) refuses a bad id with InvalidSessionId/SessionNotFound, nothing else."""
    text = data.draw(typed_ids(stored), label="id")
    assume(not _resolves(text, stored))
    before = snapshot(tmp_path, skip=outside_index(home))
    async with open_core_runtime(cwd=project, durability="none") as rt:
        with pytest.raises((InvalidSessionId, SessionNotFound, AmbiguousSessionId)) as caught:
            async with rt.resume(text):
                pass
    assert str(caught.value)
    assert changes(before, snapshot(tmp_path, skip=outside_index(home))) == []


# -- 2. prompts --------------------------------------------------------------------------

_PRINTABLE_OR_NOT = st.one_of(
    st.characters(),  # any code point a str can hold in UTF-8, NUL and controls included
    st.characters(max_codepoint=0x1F),
    st.sampled_from("\x00\x1b\x7f\x85\u2028\u2029\ufeff\u202e"),
)
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(_PRINTABLE_OR_NOT, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["path", "pattern", "agent", "instruction", "context", "session_id", ""]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)
_HEADS = (
    "/tool",
    "/tool ",
    "/tool read_file ",
    "/tool list_dir ",
    "/tool glob ",
    "/tool grep ",
    "/tool delegate ",
    "/tool nope ",
    "/delegate",
    "/delegate ",
    "/delegate explorer:",
    "/delegate reviewer: ",
    "/delegate nope: ",
    "/delegate default: /delegate explorer: ",
    "/delegate explorer: /fail ",
    "/delegate explorer: /tool read_file ",
    "/fail",
    "/fail ",
    "  /fail\t",
    "/failure ",
)
_PROMPT_LINE = st.one_of(
    st.text(_PRINTABLE_OR_NOT, max_size=60),
    st.tuples(st.sampled_from(_HEADS), st.text(_PRINTABLE_OR_NOT, max_size=40)).map("".join),
    st.tuples(
        st.sampled_from(_HEADS), _JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False))
    ).map("".join),
)
PROMPTS = st.tuples(
    st.lists(_PROMPT_LINE, min_size=1, max_size=4),
    st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x85", "\x0b"]),
).map(lambda t: t[1].join(t[0]))


def clear_reason(reason: str) -> None:
    """A failure is told in one non-empty line, not as a traceback."""
    assert reason.strip(), reason
    assert len(reason.splitlines()) == 1, reason
    assert "Traceback" not in reason


def assert_session_files_valid(home: Path, session_ids: set[str]) -> None:
    """Every line of every file of these sessions parses; the metadata too."""
    folders = session_dirs(home)
    for session_id in session_ids:
        folder = folders[session_id]
        for name in ("events.jsonl", "transcript.jsonl"):
            if (folder / name).exists():  # a session with no message has no transcript yet
                lines(folder / name)
        json.loads((folder / "metadata.json").read_bytes())


async def ask_and_resume(home: Path, project: Path, prompt: str) -> str:
    """Ask ``prompt`` in a new session: an answer or TurnFailed; then the files and a resume."""
    before = set(session_dirs(home))
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            try:
                reply = await session.ask(prompt)
            except TurnFailed as exc:
                clear_reason(exc.reason)
                outcome = "turn failed"
            except UsageError:
                assert not prompt.strip(), repr(prompt)  # no text: refused, as the CLI refuses it
                outcome = "refused: empty"
            else:
                assert reply.text.strip()
                outcome = "answered"
        assert_session_files_valid(home, set(session_dirs(home)) - before)
        async with rt.resume(session.id) as again:
            assert (await again.ask("still there?")).text.strip()
    assert_session_files_valid(home, set(session_dirs(home)) - before)
    return outcome


@fuzz(30)
@given(prompt=PROMPTS)
@example(prompt="/tool read_file {")
@example(prompt="/delegate default: /delegate default: /delegate default: /delegate default: x")
@example(prompt="\x00/fail \x00\n/delegate explorer: \x1b[2J")
async def test_prompt_is_answered_or_fails_clearly_and_session_resumes(
    prompt: str, home: Path, project: Path, tmp_path: Path
) -> None:
    """Any prompt gets an answer or a one-line failure; the files stay valid and it resumes."""
    before = snapshot(tmp_path, skip=lambda path: path == home)
    event(await ask_and_resume(home, project, prompt))
    assert changes(before, snapshot(tmp_path, skip=lambda path: path == home)) == []


@pytest.mark.parametrize(
    "prompt",
    [
        "\ud800",
        "caf\udce9 au lait",
        "/fail \udfff",
        '/tool read_file {"path": "\udc80"}',
        "/delegate explorer: \udcff",
    ],
    ids=["lone-high", "surrogate-escaped-byte", "fail", "tool-argument", "delegate"],
)
async def test_prompt_with_lone_surrogates_is_refused_and_the_session_goes_on(
    prompt: str, home: Path, project: Path
) -> None:
    """Through the API, text UTF-8 cannot hold fails its turn in one line; none of it is kept."""
    # The command line turns such bytes into U+FFFD and answers (test_cli_process.py).
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            with pytest.raises(TurnFailed) as refused:
                await session.ask(prompt)
            assert (await session.ask("still there?")).text.strip()
        assert isinstance(refused.value.__cause__, UsageError)
        clear_reason(refused.value.reason)
        assert "UTF-8" in refused.value.reason
        stored = await rt.transcript(session.id)
        assert [m.message()["content"] for m in stored if m.role == "user"] == ["still there?"]
        log = [e async for e in rt.events(session.id)]
        assert [e.data["prompt"] for e in log if e.event == "prompt:submit"] == ["still there?"]
    assert_session_files_valid(home, {session.id})


@pytest.mark.parametrize(
    "prompt",
    [
        "x" * 600_000,  # longer than the whole context window
        ("word " * 20 + "\n") * 20_000,
        "/tool list_dir {}\n" * 200,
        "/delegate explorer: " + "y" * 300_000,
    ],
    ids=["600k-one-line", "20k-lines", "200-tool-calls", "long-delegation"],
)
async def test_very_long_prompt_is_answered_or_fails_clearly(
    prompt: str, home: Path, project: Path
) -> None:
    """A huge prompt is answered or refused in one line; the session stays resumable."""
    await ask_and_resume(home, project, prompt)


# -- 3. agent specs and profiles ---------------------------------------------------------

_YAML_SCALARS = (
    "",
    "~",
    "null",
    "yes",
    "7",
    "-1",
    "0x1G",
    "1e999",
    ".nan",
    ".inf",
    "'quoted'",
    '"\\x00"',
    "[",
    "{",
    "]",
    "}",
    "*undefined",
    "&a [*a]",
    "&b {x: *b}",
    "!!binary '#'",
    "!!python/object/apply:os.system ['true']",
    "!!str 7",
    "!!int abc",
    "!!float abc",
    "!!bool maybe",
    "2020-99-99",
    "2026-11-25",
    "|\n  block",
    ">-\n  folded",
    "[read_file, grep, delegate, nope]",
    "[default, explorer, x, ../x]",
    "{kind: offline}",
    "{kind: scripted}",
    "{kind: openai, model: m}",
    "{kind: anthropic}",
    "{kind: telepathy}",
    "{allow: [read_file], deny: 7}",
    "x: y: z",
    "- a\n- b",
    "? [a]\n: b",
    "<<: *x",
    "%YAML 1.1",
    "---",
    "...",
    "\t",
)
_TEXT = st.text(_PRINTABLE_OR_NOT, max_size=30)
_ODD_VALUE = st.one_of(
    st.sampled_from(_YAML_SCALARS),
    _TEXT,
    _JSON_VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
)
_TOOLS = ("read_file", "list_dir", "glob", "grep", "delegate", "nope")
_AGENTS = ("default", "explorer", "reviewer", "x", "nope")
_PROVIDER_KINDS = ("offline", "scripted", "openai", "anthropic", "telepathy")
_SPEC_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(
        st.just("x"), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,70}", fullmatch=True)
    ),
    "description": _TEXT,
    "tools": st.lists(st.sampled_from(_TOOLS), max_size=4),
    "agents": st.lists(st.sampled_from(_AGENTS), max_size=3),
    "provider": st.sampled_from(_PROVIDER_KINDS),
    "model": _TEXT,
    "instructions": _TEXT,
    "colour": _TEXT,  # not a field of a spec
}
_PROFILE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "extends": st.sampled_from(["base", "dev", "x", "nope", ""]),
    "description": _TEXT,
    "provider": st.fixed_dictionaries(
        {"kind": st.sampled_from(_PROVIDER_KINDS)},
        optional={
            "model": _TEXT,
            "timeout": st.floats(allow_nan=False, allow_infinity=False, max_value=300),
            "max_retries": st.integers(-1, 12),
            "script": st.sampled_from(["x.yaml", "/nonexistent.yaml", ""]),
            "colour": _TEXT,
        },
    ),
    "agent": st.sampled_from(_AGENTS),
    "tools": st.fixed_dictionaries(
        {},
        optional={
            "allow": st.one_of(st.none(), st.lists(st.sampled_from(_TOOLS), max_size=3)),
            "deny": st.lists(st.sampled_from(_TOOLS), max_size=3),
        },
    ),
    "context_window": st.integers(-1, 300_000),
    "max_output_tokens": st.integers(-1, 10**12),
    "durability": st.sampled_from(["fsync", "flush", "none", "always"]),
    "max_rounds": st.integers(-1, 60),
    "max_depth": st.integers(-1, 5),
    "max_children": st.integers(-1, 9),
    "tool_concurrency": st.integers(-1, 20),
    "child_timeout": st.one_of(st.none(), st.floats(allow_nan=False)),
    "redact": st.booleans(),
    "redact_patterns": st.lists(
        st.sampled_from(["sk-[a-z]+", "(", "[", "*", "a{2,1}", "(?P<", "\\N{nope}"]), max_size=2
    ),
    "name": _TEXT,
}


def config_text(
    fields: dict[str, st.SearchStrategy[Any]], *, required: tuple[str, ...] = ()
) -> st.SearchStrategy[str]:
    """YAML mappings of known fields (sensible or not) and odd ``key: value`` lines."""
    optional = sorted(set(fields) - set(required))
    sensible = st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)).flatmap(
        lambda chosen: st.fixed_dictionaries({key: fields[key] for key in (*required, *chosen)})
    )
    odd_line = st.tuples(
        st.sampled_from(["", " ", "  ", "\t"]),
        st.one_of(st.sampled_from(sorted(fields)), _TEXT),
        st.sampled_from([": ", ":", " : ", ":\n  "]),
        _ODD_VALUE,
    ).map("".join)
    return st.one_of(
        sensible.map(lambda d: yaml.safe_dump(d, allow_unicode=True) if d else ""),
        st.tuples(
            sensible.map(lambda d: yaml.safe_dump(d, allow_unicode=True) if d else ""),
            st.lists(odd_line, max_size=3).map("\n".join),
        ).map("".join),
        st.lists(odd_line, max_size=6).map("\n".join),
    )


def _spec_text(fields: str, body: str, opener: str, closer: str) -> str:
    return f"{opener}\n{fields}\n{closer}\n{body}"


SPEC_TEXTS = st.one_of(
    st.text(_PRINTABLE_OR_NOT, max_size=120),
    st.builds(
        _spec_text,
        st.one_of(
            config_text(_SPEC_FIELDS, required=("name",)),
            st.text(_PRINTABLE_OR_NOT, max_size=60),
        ),
        st.text(_PRINTABLE_OR_NOT, max_size=40),
        st.sampled_from(["---", "---", "--- ", "---\r", "----", ""]),
        st.sampled_from(["---", "---", " ---", "...", "", "--- #"]),
    ),
)
PROFILE_TEXTS = st.one_of(st.text(_PRINTABLE_OR_NOT, max_size=120), config_text(_PROFILE_FIELDS))
_FILE_BYTES = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"\xff\xfe---\n", b"---\nname: x\n---\n\xc3", b"\x00" * 10]),
)


def write_config(path: Path, content: str | bytes) -> None:
    """Write the file; text UTF-8 cannot hold (lone surrogates) becomes invalid UTF-8 bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    path.write_bytes(data)


def assert_names_file(exc: BaseException, path: Path) -> None:
    """The error is a ConfigError (a UsageError) whose message starts with the file's path."""
    assert isinstance(exc, ConfigError), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, UsageError)
    assert str(exc).startswith(f"{path}:"), str(exc)


@fuzz(60)
@given(content=st.one_of(SPEC_TEXTS, _FILE_BYTES))
@example(content="---\nname: x\ndescription: 2020-99-99\n---\n")  # a date YAML cannot build
@example(content="---\nname: x\ntools: !!int abc\n---\n")
@example(content="---\n" + "[" * 2000 + "\n---\n")
def test_agent_spec_file_loads_or_names_itself(
    content: str | bytes, home: Path, project: Path
) -> None:
    """A spec file with any content loads, or asking for its agent raises an error naming it."""
    path = project / ".amplifier" / "agents" / "x.md"
    write_config(path, content)
    catalog = AgentCatalog.load(home=home, project=project)  # never fails: the file is left out
    if any(catalog[name].source == str(path) for name in catalog.names):
        event("loaded")
        return
    with pytest.raises(ConfigError) as caught:
        catalog["x"]
    assert_names_file(caught.value, path)
    assert catalog.names == ["default", "explorer", "reviewer"]  # the others still work
    event("refused")


@fuzz(60)
@given(content=st.one_of(PROFILE_TEXTS, _FILE_BYTES))
@example(content="max_rounds: 2020-99-99\n")  # a date YAML cannot build
@example(content="context_window: !!int many\n")
@example(content="[" * 2000)
@example(content="redact_patterns: ['a{4294967296}']\n")  # too big for re, not a re.error
@example(content="extends: x\n")  # extends itself
@example(content="extends: nope\n")  # extends a profile that does not exist
def test_profile_file_loads_or_names_itself(
    content: str | bytes, home: Path, project: Path
) -> None:
    """A profile file with any content loads, or the error starts with its path (a ConfigError)."""
    path = project / ".amplifier" / "profiles" / "x.yaml"
    write_config(path, content)
    trusted(project, home)  # the user's own profile, whatever it says
    try:
        profile = load_profile("x", home=home, cwd=project)
    except Exception as exc:
        assert_names_file(exc, path)
        event("refused")
    else:
        assert profile.name == "x"
        event("loaded")


@fuzz(40)
@pytest.mark.filterwarnings("default::amplifier.ConfigWarning")  # shown, as the CLI shows it
@given(content=st.one_of(PROFILE_TEXTS, _FILE_BYTES), agent=st.booleans())
@example(content="max_rounds: 2020-99-99\n", agent=False)
@example(content="---\nname: x\ndescription: 2020-99-99\n---\n", agent=True)
@example(content="extends: x\n", agent=False)
def test_run_with_a_fuzzed_profile_or_spec_exits_0_or_2_in_one_line(
    content: str | bytes, agent: bool, home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`amplifier run --profile x hi` with any x.yaml (or x.md): works, or exit 2 and one line."""
    monkeypatch.chdir(project)
    shutil.rmtree(project / ".amplifier", ignore_errors=True)
    path = project / ".amplifier" / ("agents/x.md" if agent else "profiles/x.yaml")
    write_config(path, content)
    trusted(project, home)
    result = invoke("run", "--profile", "x" if not agent else "base", "hi")
    if result.exit_code == 0:
        assert "You asked: hi" in result.stdout
        event("ran")
        return
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    line = one_error_line(result)
    try:
        if agent:
            AgentCatalog.load(home=home, project=project)
        else:
            load_profile("x", home=home, cwd=project)
    except ConfigError:
        assert line.startswith(f"Error: {path}:"), line
        event("refused: the file")
    else:
        event("refused: later")  # e.g. the profile names an agent or provider it cannot have


# -- 4. damaged session files ------------------------------------------------------------

_DAMAGEABLE = ("metadata.json", "events.jsonl", "transcript.jsonl")


class Store:
    """A home with three sessions, kept pristine; each case damages a fresh copy of it."""

    def __init__(self, home: Path, project: Path, pristine: Path) -> None:
        self.home, self.project, self.pristine = home, project, pristine
        make_sessions(project)
        folders = session_dirs(home)
        # The victim: the plain root session (the other root has a child).
        self.victim = next(
            sid
            for sid, folder in folders.items()
            if b"hello" in (folder / "events.jsonl").read_bytes()
        )
        self.others = sorted(set(folders) - {self.victim})
        shutil.copytree(home, pristine, symlinks=True)

    def fresh(self) -> Path:
        """The victim's folder in a home restored to the pristine copy."""
        shutil.rmtree(self.home)
        shutil.copytree(self.pristine, self.home, symlinks=True)
        return session_dirs(self.home)[self.victim]

    def untouched(self) -> dict[str, Any]:
        """Everything but the victim's folder and the index (a cache readers may refresh)."""
        victim = session_dirs(self.home)[self.victim]
        skip = outside_index(self.home)
        return {
            "home": snapshot(self.home, skip=lambda p: p == victim or skip(p)),
            "project": snapshot(self.project),
        }


@pytest.fixture
def store(home: Path, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.chdir(project)
    return Store(home, project, tmp_path / "pristine")


def check_damaged_session(store: Store, backend: str, *, cut: bool) -> str:
    """List, show and resume with the victim damaged; what happened to it, for statistics.

    Reading the damaged session may fail, only with an AmplifierError of one
    line; the listing always shows all three sessions; a resume either works
    or fails with an AmplifierError; no other session and nothing outside the
    victim's folder changes. After a resume, a ``cut`` file parses completely
    (its torn tail set aside), and a file with damage inside ends with the
    resumed turn's records, intact.
    """
    before = store.untouched()

    async def exercise() -> str:
        async with amplifier.open_runtime(cwd=store.project, durability="none") as rt:
            listed = {row.session_id for row in await rt.sessions()}
            assert {store.victim, *store.others} <= listed
            try:
                await rt.tree(store.victim)
                await rt.transcript(store.victim)
                [e async for e in rt.events(store.victim)]
            except amplifier.AmplifierError as exc:
                message = str(exc)
            else:
                message = "read"
            assert message, "an error without a message"
            assert "\n" not in message, message
            try:
                async with rt.resume(store.victim) as session:
                    reply = await session.ask("again")
                    assert "again" in reply.text
            except amplifier.AmplifierError as exc:
                refusal = str(exc)
            else:
                return "resumed"
            assert refusal, "an error without a message"
            assert "\n" not in refusal, refusal
            return "refused"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = anyio.run(exercise, backend=backend)
    assert all(issubclass(w.category, RecoveryWarning) for w in caught), [
        str(w.message) for w in caught
    ]
    folder = session_dirs(store.home)[store.victim]
    if outcome == "resumed" and cut:
        lines(folder / "events.jsonl")  # every line parses: the torn tail was set aside
        lines(folder / "transcript.jsonl")
    elif outcome == "resumed":
        last = (folder / "events.jsonl").read_bytes().splitlines()[-1]
        assert orjson.loads(last)["event"] == "session:end"
    assert changes(before["home"], store.untouched()["home"]) == []
    assert changes(before["project"], store.untouched()["project"]) == []
    return outcome


def cut_points(content: bytes, every_byte: bool) -> list[int]:
    """Where to cut a file: every byte, or (the CI size) every byte near a line's end and
    every eleventh byte elsewhere, which still cuts each line (100-400 bytes) many times
    over, its JSON and its newline, on both backends (odd steps alternate them)."""
    if every_byte:
        return list(range(len(content)))
    points = set(range(0, len(content), 11))
    for end, byte in enumerate(content):
        if byte == ord("\n"):
            points.update(range(max(0, end - 3), min(len(content), end + 3)))
    return sorted(points)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", _DAMAGEABLE)
def test_a_file_cut_at_every_byte_affects_only_its_session(
    store: Store, name: str, trials: int | None
) -> None:
    """Truncated at each byte: every session still lists, the damaged one resumes or says why.

    In CI the cuts cover every line's end and every eleventh byte; ``--trials N`` cuts at
    each."""
    original = (store.fresh() / name).read_bytes()
    outcomes: Counter[str] = Counter()
    lengths = cut_points(original, every_byte=trials is not None)
    for length in lengths:
        (store.fresh() / name).write_bytes(original[:length])
        outcomes[check_damaged_session(store, ("asyncio", "trio")[length % 2], cut=True)] += 1
    # A cut events or transcript file is set aside and resumed; only metadata is rebuilt.
    assert outcomes["resumed"] == len(lengths), outcomes


@fuzz(60)
@given(data=st.data())
def test_flipped_bits_affect_only_their_session(data: st.DataObject, store: Store) -> None:
    """Bits flipped anywhere in one file: as above, and the CLI answers in one line or a table."""
    name = data.draw(st.sampled_from(_DAMAGEABLE), label="file")
    folder = store.fresh()
    content = bytearray((folder / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        position = data.draw(st.integers(0, len(content) - 1), label="byte")
        content[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    (folder / name).write_bytes(bytes(content))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecoveryWarning)
        listing = invoke("session", "list", "--tree", "--limit", "0", "--json")
        shown = invoke("session", "show", store.victim)
    assert listing.exit_code == 0, listing.stderr
    assert {store.victim, *store.others} <= {
        row["session_id"] for row in json.loads(listing.stdout)
    }
    if shown.exit_code != 0:
        assert shown.exit_code == 1
        one_error_line(shown)
    backend = data.draw(st.sampled_from(["asyncio", "trio"]), label="backend")
    event(check_damaged_session(store, backend, cut=False))
