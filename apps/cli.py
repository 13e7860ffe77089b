"""The ``geo3d`` command: one console script with subcommands.

``geo3d --help`` only lists the commands; a command's module (and the heavy libraries it needs) is
imported when that command runs, so help and dispatch stay fast.

Most commands take options only (``geo3d synth --out DIR``). A command with tasks takes the task
first (``geo3d train pointnet --epochs 5``): each :class:`Task` names the ``Config`` dataclass and the
``run`` function of that task in the command's module, and its presets live in
``configs/<command>/<task>/``; the preset ``default.yaml`` there, when present, gives the defaults of
a command line without ``--config``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Task:
    """A task of a command that takes one: module ``geo3d_apps.<command.module>`` defines the
    dataclass ``<config>`` and the function ``<run>(config)`` for it."""

    name: str
    summary: str
    config: str
    run: str
    module: str | None = None
    """The task's own module ``geo3d_apps.<module>`` instead of the command's (a task in its own file)."""


@dataclass(frozen=True)
class Command:
    """A subcommand: module ``geo3d_apps.<module>`` defines ``Config`` (a dataclass) and ``run``, or,
    for a command with ``tasks``, one config dataclass and run function per task."""

    name: str
    module: str
    summary: str
    tasks: tuple[Task, ...] = ()


COMMANDS: tuple[Command, ...] = (
    Command("demo", "demo", "Run the main job end to end on the built-in synthetic capture."),
    Command("eval", "eval", "Evaluate a trained model.", tasks=(
        Task("nerf", "Render held-out views of a radiance field: PSNR, SSIM, LPIPS, time; export depth/points/mesh.",
             "NerfConfig", "run_nerf", module="eval_nerf"),
        Task("occupancy", "Evaluate an occupancy checkpoint: IoU, zero-shot mIoU, retrieval mAP, baseline, oracle.",
             "OccupancyConfig", "run_occupancy", module="eval_occupancy"),
        Task("pointnet", "Evaluate a PointNet checkpoint: overall, mean class and per-class accuracy.",
             "PointNetConfig", "run_pointnet"),
    )),
    Command("info", "info", "Detect a capture's format and summarise its frames, cameras and LiDAR."),
    Command("query", "query", "Ask a field with text: relevant voxels, objects found and their 3D boxes."),
    Command("reconstruct", "reconstruct", "Reconstruct a capture into an open-vocabulary 3D field (fusion, pop3d)."),
    Command("synth", "synth", "Generate a synthetic multi-camera + LiDAR capture with full ground truth."),
    Command("train", "train", "Train a model (resumable; checkpoints and metrics in --out).", tasks=(
        Task("bev", "OccFeat: fine-tune a BEV segmentation head with few labels, with or without pre-training.",
             "BevConfig", "run_bev", module="train_bev"),
        Task("nerf", "Fit a radiance field (voxel grid, hash grid or MLP) to a capture's posed images.",
             "NerfConfig", "run_nerf", module="train_nerf"),
        Task("occupancy", "Train the open-vocabulary occupancy network (LiDAR occupancy + teacher distillation).",
             "OccupancyConfig", "run_occupancy", module="train_occupancy"),
        Task("pointnet", "Train a PointNet shape classifier on the synthetic shape set or ModelNet40.",
             "PointNetConfig", "run_pointnet"),
        Task("sdf", "Fit a neural SDF to a watertight mesh; write its mesh, metrics and a preview picture.",
             "SDFConfig", "run_sdf", module="train_sdf"),
    )),
    Command("view", "view", "Show a field in an Open3D window (or --screenshot PNG headless), coloured by RGB, "
                            "class or a text query's relevance."),
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
        *(f"  {c.name:<{width}}  {c.summary}" + _tasks_note(c) for c in COMMANDS),
        "",
        "Run 'geo3d COMMAND --help' for a command's options (or tasks); '--config NAME|FILE' loads a YAML",
        "preset from configs/COMMAND/ (configs/COMMAND/TASK/) that the other options override.",
    ]
    return "\n".join(lines)


def _tasks_note(command: Command) -> str:
    return f" Tasks: {', '.join(t.name for t in command.tasks)}." if command.tasks else ""


def _task_usage(command: Command) -> str:
    width = max(len(t.name) for t in command.tasks)
    return "\n".join([
        f"usage: geo3d {command.name} [-h] TASK [OPTIONS...]",
        "",
        command.summary,
        "",
        "tasks:",
        *(f"  {t.name:<{width}}  {t.summary}" for t in command.tasks),
        "",
        f"Run 'geo3d {command.name} TASK --help' for a task's options; '--config NAME|FILE' loads a YAML",
        f"preset from configs/{command.name}/TASK/ that the other options override.",
    ])


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
    rest, prog, task = args[1:], f"geo3d {command.name}", None
    if command.tasks:
        if not rest or rest[0] in ("-h", "--help"):
            print(_task_usage(command), file=sys.stdout if rest else sys.stderr)
            return EXIT_OK if rest else EXIT_USAGE
        tasks = {t.name: t for t in command.tasks}
        task = tasks.get(rest[0])
        if task is None:
            print(f"{prog}: error: unknown task {rest[0]!r} (tasks: {', '.join(tasks)}; "
                  f"see 'geo3d {command.name} --help')", file=sys.stderr)
            return EXIT_USAGE
        rest, prog = rest[1:], f"{prog} {task.name}"
    from geo3d.errors import Geo3dError
    from geo3d_apps.config import ConfigError, parse_command_config

    module = importlib.import_module(f"geo3d_apps.{command.module}")
    try:
        if task is None:
            config_cls, run = module.Config, module.run
            config = parse_command_config(command.name, config_cls, rest, command.summary)
        else:
            if task.module is not None:
                module = importlib.import_module(f"geo3d_apps.{task.module}")
            config_cls, run = getattr(module, task.config), getattr(module, task.run)
            config = parse_command_config(f"{command.name}/{task.name}", config_cls, rest, task.summary,
                                          prog=prog, default_preset="default")
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # tyro/argparse: --help (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        code = run(config)
    except (Geo3dError, ValueError, OSError) as exc:  # OSError: unwritable outputs, full disk, ...
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
