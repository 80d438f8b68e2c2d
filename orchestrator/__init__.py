"""orchestrator: run Claude Code instances in parallel within live budgets."""

__version__ = "0.1.0"
