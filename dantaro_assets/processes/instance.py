"""The Dagster instance config: the packaged dagster.yaml with the settings' run limit and log level filled in.

The run limit and the log level are plain values in Dagster's schema (no ``{env: ...}``), so the file in
DAGSTER_HOME is rendered from the template (shipped in the package, so ``pip install .`` can render it)
rather than copied.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import yaml

from dantaro_assets.settings import Settings, load_settings

TEMPLATE = Path(__file__).resolve().with_name("dagster.yaml")


def render_instance_config(settings: Settings, template: Path = TEMPLATE) -> dict:
    """The template's config with the run limit taken from the settings."""
    config = yaml.safe_load(template.read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = settings.worker_max_workers
    # every run the queue may start can wait for the pool at its fetching step instead of in the queue
    config["concurrency"]["pools"]["op_granularity_run_buffer"] = settings.worker_max_workers
    # the level of each run's console logger and of the context.log messages kept (processes.console)
    config.setdefault("python_logs", {})["python_log_level"] = settings.worker_log_level  # the template may lack it
    return config


def write_instance_config(dagster_home: Path, settings: Settings, template: Path = TEMPLATE) -> Path:
    """Write ``dagster.yaml`` into ``dagster_home`` (created if missing); returns its path."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    header = f"# written by dantaro_assets.processes.instance from {template}; edit the template, not this file\n"
    staged = target.with_name(f".dagster.yaml.{os.getpid()}")
    staged.write_text(header + yaml.safe_dump(render_instance_config(settings, template), sort_keys=False))
    staged.replace(target)  # whole or not at all: another process may be reading it (dev rewrites it at start)
    return target


def prepare_instance_home(settings: Settings, refresh: bool = False) -> Path:
    """The Dagster instance folder of every ``dantaro`` command and the processes it starts.

    ``DAGSTER_HOME`` when the operator set it (its dagster.yaml is theirs), else
    ``DANTARO_STATE_DIR/dagster_home`` with the project's dagster.yaml: written when missing, and
    rewritten from the current settings with ``refresh`` (``dantaro dev`` at start).
    """
    import dagster as dg  # here, not at the top: `dantaro stop` and `dantaro settings` start without Dagster's 1.5 s import

    if settings.dagster_home is not None:
        return settings.dagster_home
    home = settings.state_dir / "dagster_home"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "dagster_home.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # `dantaro dev` and `dantaro api` started together open a fresh instance at once
        if refresh or not (home / "dagster.yaml").exists():
            write_instance_config(home, settings)
        # its SQLite storages are created by the first process that opens it: one at a time, or one of two
        # fails on CREATE TABLE ("table job_ticks already exists")
        with dg.DagsterInstance.from_config(str(home)):
            pass
    return home


def state_folder_problem(error: OSError, settings: Settings) -> str | None:
    """One line for a file error inside the state folder or the instance folder (read-only, full, not ours); None
    for an error elsewhere, which is not about them."""
    if not error.filename:
        return None
    path = Path(os.fsdecode(error.filename)).resolve()
    for folder, variable in ((settings.state_dir, "DANTARO_STATE_DIR"), (settings.instance_home, "DAGSTER_HOME")):
        if path == folder or folder in path.parents:
            return (f"cannot write {path} ({error.strerror or type(error).__name__}): the folder {folder} must be writable by this "
                    f"user; set {variable} to one that is")
    return None


def use_instance(settings: Settings, refresh: bool = False) -> Path:
    """Point this process, and every process it starts, at the settings' state folder and Dagster instance."""
    home = prepare_instance_home(settings, refresh=refresh)
    os.environ["DANTARO_STATE_DIR"] = str(settings.state_dir)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def main(argv: list[str] | None = None) -> int:
    """``python -m dantaro_assets.processes.instance DAGSTER_HOME [--template deploy/dagster.prod.yaml]``.

    An entry point of its own (deploy/README.md runs it before any service starts), so it reads the settings.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Write DAGSTER_HOME/dagster.yaml from a template with WORKER_MAX_WORKERS filled in.")
    parser.add_argument("dagster_home", type=Path)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    print(write_instance_config(args.dagster_home, load_settings(), template=args.template))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
