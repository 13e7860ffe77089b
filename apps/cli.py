"""The ``geo3d`` command: one console script with subcommands.

``geo3d --help`` only lists the commands; a command's module (and the heavy libraries it needs) is
imported when that command runs, so help and dispatch stay fast.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Command:
    """A subcommand: module ``geo3d_apps.<module>`` defines ``Config`` (a dataclass) and ``run``."""

    name: str
    module: str
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command("demo", "demo", "Run the main job end to end on the built-in synthetic capture."),
    Command("info", "info", "Detect a capture's format and summarise its frames, cameras and LiDAR."),
    Command("synth", "synth", "Generate a synthetic multi-camera + LiDAR capture with full ground truth."),
)


def _usage() -> str:
    from geo3d import __version__

    width = max(len(c.name) for c in COMMANDS)
    lines = [
        f"usage: geo3d [-h] [--version] COMMAND [ARGS...]   (geo3d {__version__})",
        "",
        "3D perception and neural rendering: multi-camera captures to open-vocabulary 3D fields.",
        "",
        "commands:",
        *(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS),
        "",
        "Run 'geo3d COMMAND --help' for a command's options; '--config NAME|FILE' loads a YAML preset",
        "from configs/COMMAND/ that the other options override.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``geo3d`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help"):
        print(_usage())
        return EXIT_OK
    if args[0] == "--version":
        from geo3d import __version__

        print(f"geo3d {__version__}")
        return EXIT_OK
    by_name = {c.name: c for c in COMMANDS}
    command = by_name.get(args[0])
    if command is None:
        print(f"geo3d: error: unknown command {args[0]!r} (commands: {', '.join(by_name)})", file=sys.stderr)
        return EXIT_USAGE
    from geo3d.errors import Geo3dError
    from geo3d_apps.config import ConfigError, parse_command_config

    module = importlib.import_module(f"geo3d_apps.{command.module}")
    try:
        config = parse_command_config(command.name, module.Config, args[1:], command.summary)
    except ConfigError as exc:
        print(f"geo3d {command.name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # tyro/argparse: --help (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        code = module.run(config)
    except (Geo3dError, ValueError, FileExistsError) as exc:
        print(f"geo3d {command.name}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"geo3d {command.name}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
