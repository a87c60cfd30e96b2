"""Agent specs, the agent loop, tools, providers and profiles."""

__all__: list[str] = []
