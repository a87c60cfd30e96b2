"""Permission rules, and asking whoever opened the session tree before a tool call runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import amplifier
from amplifier import ApprovalDecision, ApprovalRequest, Permissions
from amplifier.agents._permissions import Judge, Rule, always_rule, subject_of

from .helpers import events, first, names
from .trusted import trusted


def judge(**rules: Any) -> Judge:
    return Judge.of(Permissions(**rules))


@pytest.mark.parametrize(
    ("rules", "tool", "subject", "outcome"),
    [
        ({}, "read_file", "a.py", "allow"),
        ({}, "delegate", "explorer", "allow"),
        ({}, "bash", "ls", "ask"),
        ({}, "write_file", "a.py", "ask"),
        ({"allow": ["bash(git status*)"]}, "bash", "git status --short", "allow"),
        ({"allow": ["bash(git status*)"]}, "bash", "git status; rm -rf ~", "ask"),
        ({"allow": ["bash(git status*)"]}, "bash", "git status $(rm -rf ~)", "ask"),
        ({"allow": ["bash(git *)"]}, "bash", "git add . && git commit -m x", "allow"),
        ({"allow": ["bash"], "ask": ["bash(git push*)"]}, "bash", "git push", "ask"),
        ({"allow": ["bash"], "deny": ["bash(rm *)"]}, "bash", "ls && rm -rf x", "deny"),
        ({"ask": ["read_file(secrets/**)"]}, "read_file", "secrets/a/key.pem", "ask"),
        ({"deny": ["read_file"], "allow": ["read_file"]}, "read_file", "a", "deny"),
        ({"allow": ["write_file(tests/**)"]}, "write_file", "tests/unit/test_a.py", "allow"),
        ({"allow": ["write_file(tests/**)"]}, "write_file", "src/a.py", "ask"),
        ({"allow": ["mcp_*"]}, "mcp_git_status", None, "allow"),
        ({"deny": ["mcp_git_*"]}, "mcp_git_push", None, "deny"),
    ],
)
def test_rules_decide_deny_over_ask_over_allow(
    rules: dict[str, list[str]], tool: str, subject: str | None, outcome: str
) -> None:
    """Deny beats ask beats allow; side effects ask by default; compound commands are split."""
    side_effects = tool not in ("read_file", "delegate")
    assert judge(**rules)(tool, subject, side_effects=side_effects).outcome == outcome


def test_rules_match_paths_relative_to_the_project(project: Path) -> None:
    """An absolute path inside the project, or one with '..', matches as its project path."""
    root = project.resolve()
    rules = judge(allow=["write_file(tests/**)"])
    for path in (f"{root}/tests/a.py", "src/../tests/a.py", "./tests/a.py"):
        subject = subject_of("file_path", {"file_path": path}, root)
        assert rules("write_file", subject, side_effects=True).outcome == "allow", path
    outside = subject_of("file_path", {"file_path": "/tmp/tests/a.py"}, root)
    assert rules("write_file", outside, side_effects=True).outcome == "ask"


def test_rules_match_the_file_a_path_leads_to(project: Path) -> None:
    """A link to a denied file, or a path through a link, matches as the file it reaches:
    `e -> .env` is `.env`, and `tests/link/x` with `tests/link -> ..` is `x`, not `tests/**`."""
    root = project.resolve()
    (root / ".env").write_text("SECRET=1\n")
    (root / "e").symlink_to(".env")
    (root / "tests").mkdir()
    (root / "tests" / "link").symlink_to("..", target_is_directory=True)
    rules = judge(allow=["write_file(tests/**)"], deny=["write_file(.env)"])
    for path in ("e", f"{root}/e", "tests/link/.env"):
        subject = subject_of("file_path", {"file_path": path}, root)
        assert subject == ".env", path
        assert rules("write_file", subject, side_effects=True).outcome == "deny", path
    through = subject_of("file_path", {"file_path": "tests/link/setup.py"}, root)
    assert through == "setup.py"
    assert rules("write_file", through, side_effects=True).outcome == "ask"


def test_granted_and_assume_yes_answer_asks_but_never_a_deny() -> None:
    """A rule granted to the session, or --yes, lets an ask run; a deny still refuses."""
    rules = Judge.of(Permissions(deny=["bash(rm *)"]), assume_yes=True)
    assert rules("bash", "make", side_effects=True).outcome == "allow"
    assert rules("bash", "rm -rf x", side_effects=True).outcome == "deny"
    granted = [always_rule("bash", "make test *")]
    plain = judge()
    assert plain("bash", "make test *", side_effects=True, granted=granted).outcome == "allow"
    assert plain("bash", "make test x", side_effects=True, granted=granted).outcome == "ask"
    assert plain("bash", "make test *; rm x", side_effects=True, granted=granted).outcome == "ask"


def test_a_rule_with_a_pattern_denies_or_asks_a_tool_with_no_subject_and_allows_none() -> None:
    """An MCP tool, or a Python tool without a subject, gives a pattern nothing to look at:
    a deny or ask rule with one covers every call (with --yes too), an allow rule none."""
    denying = Judge.of(Permissions(deny=["mcp_my_srv_echo(*)"]), assume_yes=True)
    assert denying("mcp_my_srv_echo", None, side_effects=True).outcome == "deny"
    assert judge(ask=["delete_everything(prod*)"])(
        "delete_everything", None, side_effects=False
    ).outcome == "ask"
    allowing = judge(allow=["mcp_my_srv_echo(*)"])
    assert allowing("mcp_my_srv_echo", None, side_effects=True).outcome == "ask"


@pytest.mark.parametrize("rule", ["", "bash(", "bash()", "(x)", "b a s h"])
def test_a_rule_that_does_not_parse_is_a_clear_error(rule: str) -> None:
    """A malformed rule is refused with a message that shows what a rule looks like."""
    with pytest.raises(amplifier.ConfigError, match=r"permission rule|pattern in parentheses"):
        Permissions.of(allow=[rule])
    with pytest.raises(ValueError, match=r"permission rule|pattern in parentheses"):
        Rule.parse(rule)


# -- through the runtime ---------------------------------------------------------------

WRITE = '/tool write_file {"file_path": "notes.txt", "content": "hello\\n"}'


async def test_without_approve_a_call_that_asks_is_denied_and_the_model_is_told(
    home: Path, project: Path
) -> None:
    """No one to ask: the file is not written, and the tool result says how to allow it."""
    async with amplifier.open_runtime(home=home, cwd=project) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(WRITE)
    assert not (project / "notes.txt").exists()
    assert "needs approval" in reply.text
    assert "--yes" in reply.text
    decision = first(events(home, session.id), "approval:decision")
    assert decision["data"]["decided_by"] == "no one"
    assert decision["data"]["decision"] == "deny"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_approve_callback_is_asked_with_what_the_call_would_do(
    home: Path, project: Path, kind: str
) -> None:
    """The callback (sync or async) sees tool, arguments, the diff and the rule; True runs it."""
    seen: list[ApprovalRequest] = []

    def sync(request: ApprovalRequest) -> bool:
        seen.append(request)
        return True

    async def later(request: ApprovalRequest) -> bool:
        await anyio.lowlevel.checkpoint()
        return sync(request)

    approve = sync if kind == "sync" else later
    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            await session.ask(WRITE)
    assert (project / "notes.txt").read_text() == "hello\n"
    (request,) = seen
    assert request.tool == "write_file"
    assert request.arguments == {"file_path": "notes.txt", "content": "hello\n"}
    assert "+hello" in request.shown
    assert request.rule == "default"
    assert request.sessions == (session.id,)
    log = events(home, session.id)
    order = names(log)
    assert order.index("tool:pre") < order.index("approval:request")
    assert order.index("approval:request") < order.index("approval:decision")
    assert order.index("approval:decision") < order.index("tool:post")
    assert first(log, "approval:decision")["data"]["decided_by"] == "callback"
    assert first(log, "tool:post")["data"]["file"]["path"] == "notes.txt"


async def test_a_denial_with_a_reason_reaches_the_model(home: Path, project: Path) -> None:
    """The callback's reason is what the model reads; the call does not run."""

    def approve(request: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision(allowed=False, reason="notes are read-only today")

    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(WRITE)
    assert "notes are read-only today" in reply.text
    assert not (project / "notes.txt").exists()


async def test_a_failing_callback_denies_and_the_turn_goes_on(home: Path, project: Path) -> None:
    """A callback that raises denies the call (its error is the reason); the turn completes."""

    def approve(request: ApprovalRequest) -> bool:
        raise RuntimeError("approval service down")

    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(WRITE)
    assert "approval service down" in reply.text
    assert not (project / "notes.txt").exists()


async def test_a_sub_session_asks_through_its_parents(home: Path, project: Path) -> None:
    """A question from depth two reaches the callback with the whole path of sessions."""
    seen: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> bool:
        seen.append(request)
        return True

    prompt = f"/delegate default: /delegate default: {WRITE}"
    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            await session.ask(prompt)
    (request,) = seen
    assert len(request.sessions) == 3
    assert request.sessions[0] == session.id
    assert request.agents == ("default", "default", "default")
    assert request.session_id == request.sessions[-1]
    assert (project / "notes.txt").exists()
    asked = first(events(home, request.session_id), "approval:request")
    assert asked["data"]["tool"] == "write_file"


async def test_questions_of_concurrent_children_are_answered_while_others_run(
    home: Path, project: Path
) -> None:
    """Two children ask at once; a sibling that asks nothing finishes while they wait."""
    waiting: list[str] = []
    release = anyio.Event()

    async def approve(request: ApprovalRequest) -> bool:
        waiting.append(request.session_id)
        if len(waiting) == 2:
            release.set()
        await release.wait()
        return True

    prompt = "\n".join(
        [
            '/delegate default: /tool write_file {"file_path": "a.txt", "content": "a"}',
            '/delegate default: /tool write_file {"file_path": "b.txt", "content": "b"}',
            "/delegate explorer: /tool list_dir {}",
        ]
    )
    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            with anyio.fail_after(20):
                reply = await session.ask(prompt)
    assert len(set(waiting)) == 2
    assert (project / "a.txt").read_text() == "a"
    assert (project / "b.txt").read_text() == "b"
    assert reply.text.count("completed") == 3


async def test_a_cancelled_turn_withdraws_its_question(home: Path, project: Path) -> None:
    """Cancelling the turn while the question waits: nothing runs, and the record says so."""
    asked = anyio.Event()

    async def approve(request: ApprovalRequest) -> bool:
        asked.set()
        await anyio.sleep_forever()
        return True

    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    with pytest.raises(amplifier.TurnCancelled):
                        await session.ask(WRITE)

                tg.start_soon(ask)
                await asked.wait()
                session.cancel()
    assert not (project / "notes.txt").exists()
    decision = first(events(home, session.id), "approval:decision")
    assert decision["data"]["reason"].startswith("withdrawn")


async def test_always_grants_the_rule_to_the_session_across_resumes(
    home: Path, project: Path
) -> None:
    """'Always for this session' is asked once: later calls, even after a resume, run."""
    asked: list[str] = []

    def approve(request: ApprovalRequest) -> ApprovalDecision:
        asked.append(request.always_rule)
        return ApprovalDecision(allowed=True, always=True, decided_by="user")

    async with amplifier.open_runtime(home=home, cwd=project, approve=approve) as rt:
        async with rt.open_session() as session:
            await session.ask(WRITE)
            await session.ask(WRITE.replace("hello", "again"))
    async with amplifier.open_runtime(home=home, cwd=project) as rt:  # no one to ask now
        async with rt.resume(session.id) as again:
            await again.ask(WRITE.replace("hello", "third"))
    assert asked == ["write_file"]
    assert (project / "notes.txt").read_text() == "third\n"
    decisions = [e["data"] for e in events(home, session.id) if e["event"] == "approval:decision"]
    assert decisions[0]["granted"] == "write_file"
    assert [d["decided_by"] for d in decisions] == ["user", "rule", "rule"]


async def test_profile_permissions_and_runtime_rules_apply(home: Path, project: Path) -> None:
    """A profile's deny refuses, and open_runtime's allow lets a matching command run."""
    folder = project / ".amplifier" / "profiles"
    folder.mkdir(parents=True)
    (folder / "guarded.yaml").write_text(
        "extends: base\npermissions:\n  deny: ['bash(curl *)']\n  allow: [edit_file]\n"
    )
    trusted(project, home)
    rules = Permissions(allow=["bash(echo *)"])
    async with amplifier.open_runtime(
        home=home, cwd=project, profile="guarded", permissions=rules
    ) as rt:
        async with rt.open_session() as session:
            allowed = await session.ask('/tool bash {"command": "echo fine"}')
            denied = await session.ask('/tool bash {"command": "curl http://example.invalid"}')
    assert "bash (ok): fine [exit code 0]" in allowed.text
    assert "refuses this call" in denied.text
    decisions = [e["data"] for e in events(home, session.id) if e["event"] == "approval:decision"]
    assert [(d["decision"], d["rule"]) for d in decisions] == [
        ("allow", "bash(echo *)"),
        ("deny", "bash(curl *)"),
    ]


async def test_a_bad_rule_in_a_profile_names_the_file(home: Path, project: Path) -> None:
    """A profile whose permissions do not parse is refused before anything runs."""
    folder = project / ".amplifier" / "profiles"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text("permissions:\n  allow: ['bash(']\n")
    trusted(project, home)
    with pytest.raises(amplifier.ConfigError, match=r"broken\.yaml.*permissions\.allow"):
        async with amplifier.open_runtime(home=home, cwd=project, profile="broken"):
            pass


async def test_commands_get_no_provider_keys(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The providers' API keys are not in a command's environment; other variables are."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-commands")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-for-commands")
    monkeypatch.setenv("AMPLIFIER_TEST_VISIBLE", "visible")
    command = 'echo "[$OPENAI_API_KEY][$ANTHROPIC_API_KEY][$AMPLIFIER_TEST_VISIBLE]"'
    async with amplifier.open_runtime(home=home, cwd=project, assume_yes=True) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(f"/tool bash {json.dumps({'command': command})}")
    assert "[][][visible]" in reply.text


@pytest.mark.parametrize("kind", ["allow", "ask", "deny"])
async def test_a_rule_given_to_open_runtime_that_names_no_tool_is_refused(
    home: Path, project: Path, kind: str
) -> None:
    """`--deny 'Bash(rm*)'` (a misspelt tool) would match nothing and protect nothing: like
    the same rule in a profile, it is a ConfigError naming the tools, before anything runs."""
    rules = Permissions(**{kind: ["Bash(rm*)"]})
    with pytest.raises(
        amplifier.ConfigError, match=r"'Bash\(rm\*\)' names no tool; available: bash"
    ):
        async with amplifier.open_runtime(cwd=project, permissions=rules):
            pass
    assert not (home / "projects").exists()


@pytest.mark.parametrize(
    "command",
    [
        "(rm -rf victim)",
        "{ rm -rf victim; }",
        "if true; then rm -rf victim; fi",
        "for x in 1; do rm -rf victim; done",
        "! rm -rf victim",
        "FOO=1 rm -rf victim",
        "\\rm -rf victim",
        "time rm -rf victim",
    ],
)
def test_a_deny_rule_sees_the_command_inside_what_wraps_it(command: str) -> None:
    """`bash(rm -rf*)` denies the command in a subshell, a group, an `if` or a loop, after
    `!`, an assignment, a backslash or `time`; an allow rule still allows none of them."""
    assert judge(deny=["bash(rm -rf*)"])("bash", command, side_effects=True).outcome == "deny"
    allowed = judge(allow=["bash(rm -rf*)"])("bash", command, side_effects=True).outcome
    assert allowed == "ask"
