"""YAML for agent specs, profiles and scripts: safe loading with one kind of failure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class YamlProblem(Exception):
    """Text that is not loadable YAML: what is wrong and on which line (1-based) if known."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``; malformed or absurdly nested text raises ``YamlProblem``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise YamlProblem(problem, mark.line + 1 if mark is not None else None) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tag whose value cannot be built
        raise YamlProblem(f"a value YAML cannot build: {exc}", None) from None
    except RecursionError:
        raise YamlProblem("nested too deeply", None) from None


def line_of(text: str, path: Sequence[str | int]) -> int | None:
    """The line (1-based) of the value at ``path`` (mapping keys, list indexes) in ``text``.

    None when the text does not parse or holds nothing at that path.
    """
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    for step in path:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step),
                None,
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            return None
        if node is None:
            return None
    return int(node.start_mark.line) + 1 if node is not None else None
