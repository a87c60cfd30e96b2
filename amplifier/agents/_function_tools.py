"""Tools written as Python functions: ``@amplifier.tool``.

    @amplifier.tool
    async def search(ctx: amplifier.ToolContext, query: str, limit: int = 10) -> str:
        '''Search the project's issue tracker.

        Args:
            query: Words to look for.
            limit: How many issues to return at most.
        '''

Rule 1: the function's name is the tool's name and its docstring (without
        its argument section) the description the model reads; a parameter
        is described by ``Annotated[..., Field(description=...)]`` or by the
        docstring's ``Args:`` section (Google, NumPy or reST style).
Rule 2: arguments are validated by pydantic before the function runs; a
        mistake is a tool error the model can read (``parse_arguments``).
Rule 3: an optional first parameter annotated ``ToolContext`` receives the
        call's context: the session, the project, the call id.
Rule 4: a signature pydantic cannot describe is found once, when a Runtime
        is opened with the tool (``check``), as one error naming the
        function; a decorated function stays callable as it was.
Rule 5: a sync function runs in a worker thread: it never blocks the
        sessions' event loop. Its return value is the result: text as it
        is, anything else as JSON. Python cannot stop a thread: a turn
        cancelled meanwhile (Ctrl-C) ends once the function returns, and an
        ``AgentWarning`` says so when the cancellation comes, so that a person
        does not wait without knowing why.
Rule 6: a function cannot end the program: ``SystemExit`` (a CLI's ``main``
        calling ``sys.exit``), or any exception that is not an ``Exception``,
        fails the call as an error would. Only cancellation passes, and a
        ``KeyboardInterrupt`` on the event loop's thread (Ctrl-C in a program
        that leaves it to Python); in a worker thread it is the function's own.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
import warnings
from collections.abc import Callable
from typing import Annotated, Any, overload

import anyio
import docstring_parser
import orjson
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from ._exceptions import AgentWarning, ConfigError, ToolFailed
from ._tools import ToolContext


class FunctionTool:
    """A tool made from a typed function (``@amplifier.tool``); see the module's rules."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
        subject: str | None = None,
    ) -> None:
        self.function = function
        named = name or getattr(function, "__name__", None)
        if not isinstance(named, str):
            raise ConfigError(
                f"{function!r} has no name of its own (a functools.partial, a callable "
                "object): give one, @amplifier.tool(name=...)"
            )
        self.name = named
        self.side_effects = side_effects
        """True for a tool that changes something: its calls ask first unless a rule allows
        them (``write_file``, ``bash`` and MCP tools do)."""
        self.subject = subject
        """The argument permission rules match (``mytool(pattern)``), if any."""
        self._description = description
        self._arguments: type[BaseModel] | None = None
        self._context: str | None = None
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, as if it were not a tool."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name} of {_where(self.function)}>"

    @property
    def description(self) -> str:
        if self._description is None:
            self._description = _description(self.function)
        return self._description

    @property
    def Arguments(self) -> type[BaseModel]:
        if self._arguments is None:
            self.check()
        assert self._arguments is not None
        return self._arguments

    def check(self) -> None:
        """Build the arguments model and its JSON schema; ``ConfigError`` naming the function
        if its signature cannot be described (Rule 4)."""
        if self._arguments is not None:
            return
        try:
            model, context = _arguments_of(self.function)
            model.model_json_schema()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"tool {self.name} ({_where(self.function)}): its signature cannot be "
                f"described to a model: {type(exc).__name__}: {exc}"
            ) from exc
        if self.subject is not None and self.subject not in model.model_fields:
            raise ConfigError(
                f"tool {self.name} ({_where(self.function)}): subject {self.subject!r} is not "
                "one of its parameters"
            )
        self._arguments, self._context = model, context

    async def run(self, arguments: BaseModel, context: ToolContext) -> str:
        self.check()
        values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        if self._context is not None:
            values[self._context] = context
        in_thread = not inspect.iscoroutinefunction(self.function)
        try:
            if in_thread:
                call = functools.partial(self.function, **values)
                result = await self._in_thread(call)
                in_thread = False  # what it returned runs on the loop
                if inspect.isawaitable(result):
                    result = await result
            else:
                result = await self.function(**values)
        except Exception:
            raise
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit):
                raise
            if isinstance(exc, KeyboardInterrupt) and not in_thread:
                raise
            raise ToolFailed(  # Rule 6
                f"the tool raised {type(exc).__name__}({exc}); a tool cannot end the program"
            ) from None
        return _as_text(result)

    async def _in_thread(self, call: Callable[[], Any]) -> Any:
        """``call`` in a worker thread; a cancellation while it runs is said (Rule 5)."""
        returned = False

        async def notice() -> None:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                if not returned:
                    warnings.warn(
                        f"tool {self.name} is a Python function, which cannot be interrupted: "
                        "the turn ends when it returns",
                        AgentWarning,
                        stacklevel=1,
                    )
                raise

        result: Any = None
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(notice)
            try:
                result = await anyio.to_thread.run_sync(call)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # raised past the group, not inside one
                failure = exc
            returned = True
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result


@overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    subject: str | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    subject: str | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a typed function, sync or async (``@tool`` or ``@tool(...)``).

    ``name`` and ``description`` replace the function's own; ``side_effects``
    makes its calls ask first unless a rule allows them; ``subject`` names
    the parameter that permission rules with a pattern match. Give the tool
    to ``open_runtime(tools=[...])`` and name it in an agent's ``tools``.
    """

    def make(function: Callable[..., Any]) -> FunctionTool:
        if not callable(function):
            raise TypeError(f"@tool needs a function, not {type(function).__name__}")
        return FunctionTool(
            function, name=name, description=description, side_effects=side_effects,
            subject=subject,
        )

    return make(function) if function is not None else make


def import_tool(path: str) -> FunctionTool:
    """The tool a profile names by import path, ``package.module:name``.

    A plain function there becomes a tool as ``@tool`` would make it.
    Raises ``ValueError`` saying what is wrong.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError("write it as package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if isinstance(value, FunctionTool):
        return value
    if callable(value) and not isinstance(value, type):
        return FunctionTool(value)
    raise ValueError(f"{attribute} is a {type(value).__name__}, not a function or tool")


# -- the signature as a model -------------------------------------------------------------


def _arguments_of(function: Callable[..., Any]) -> tuple[type[BaseModel], str | None]:
    """The pydantic model of the function's parameters, and its context parameter if any."""
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function, include_extras=True)
    documented = _documented_parameters(function)
    fields: dict[str, Any] = {}
    context: str | None = None
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        annotation = hints.get(name, Any)
        if index == 0 and _is_context(annotation):
            context = name
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(
                f"tool {function.__name__} ({_where(function)}): *{name} cannot be described "
                "to a model; give each parameter a name"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"tool {function.__name__} ({_where(function)}): {name} is positional-only; "
                "a model passes arguments by name"
            )
        if parameter.annotation is inspect.Parameter.empty:
            raise ConfigError(
                f"tool {function.__name__} ({_where(function)}): parameter {name} has no "
                "type annotation"
            )
        if _is_context(annotation):
            raise ConfigError(
                f"tool {function.__name__} ({_where(function)}): the ToolContext parameter "
                "must come first"
            )
        description = documented.get(name)
        if description and not _described(annotation):
            annotation = Annotated[annotation, Field(description=description)]
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    model = create_model(
        f"{function.__name__}_arguments",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
        **fields,
    )
    return model, context


def _is_context(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation is ToolContext


def _described(annotation: Any) -> bool:
    """Whether an ``Annotated`` type already carries a ``Field(description=...)``."""
    if typing.get_origin(annotation) is not Annotated:
        return False
    return any(
        isinstance(extra, FieldInfo) and extra.description
        for extra in typing.get_args(annotation)[1:]
    )


def _documented_parameters(function: Callable[..., Any]) -> dict[str, str]:
    doc = inspect.getdoc(function)
    if not doc:
        return {}
    return {
        param.arg_name: " ".join(param.description.split())
        for param in docstring_parser.parse(doc).params
        if param.description
    }


def _description(function: Callable[..., Any]) -> str:
    """The docstring without its parameter, return and raises sections (Rule 1)."""
    doc = inspect.getdoc(function)
    if not doc:
        return ""
    parsed = docstring_parser.parse(doc)
    parts = [parsed.short_description or "", parsed.long_description or ""]
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


def _where(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    named = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    return f"{module}.{named}" if isinstance(named, str) else repr(function)


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    if result is None:
        return "done"
    try:
        return orjson.dumps(result, default=str).decode()
    except TypeError:
        return str(result)
