"""CLI commands contributed by model families and tools.

Each module here defines ``register(app: typer.Typer, data_app: typer.Typer) -> None`` that adds its commands
(e.g. ``changekit convert misgnet``, ``changekit clip-tag``, ``changekit data convert hiucd``). ``cli.py`` calls
every module's ``register`` at start-up, so a new family adds its commands without editing ``cli.py``. Keep
imports of heavy libraries inside the command functions so that ``changekit --help`` stays fast.
"""
