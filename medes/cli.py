"""`medes` command line: thin adapters over the library. Heavy imports live inside each command.

Errors end with `typer.Exit(code=1)` and a one-line reason on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Chinese medical-ethics benchmark and alignment toolkit.")
index_app = typer.Typer(no_args_is_help=True, help="Build and inspect retrieval indexes.")
app.add_typer(index_app, name="index")

# Option aliases reused across commands.
IndexDir = Annotated[Path | None, typer.Option("--index", help="Index directory (default: MEDES_HOME/index).")]
LlmSpec = Annotated[str | None, typer.Option("--llm", help="Chat model spec: openai:<model> | llamacpp:<path.gguf>.")]
RunId = Annotated[str | None, typer.Option("--run", help="Run id; reuse it to resume.")]
StorePath = Annotated[Path | None, typer.Option("--store", help="SQLite store (default: MEDES_HOME/medes.sqlite).")]


def fail(message: str) -> typer.Exit:
    typer.secho(f"medes: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


if __name__ == "__main__":
    app()
