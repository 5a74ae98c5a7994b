"""The appliance's commands: ``silbato install``, ``uninstall``, ``update``, ``doctor``, ``status``, ``wifi`` and ``fleet``.

``node.cli`` adds them to its group with ``add_to(cli)``; this module does not import
``node.cli``, so either may be imported first (and ``python -m node.cli`` works). Each
command imports its module when it runs, so ``silbato --help`` stays fast. A
``SilbatoError`` ends a command as one line: the group (``node.cli.Group``) turns it
into a ``click.ClickException``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import click

from node import config as config_mod
from node.errors import SilbatoError

_ROOT_HELP = ("Act on the node installed under DIR instead of / (tests, trials): its settings are "
              "DIR/etc/silbato/silbato.toml, and the commands that need root privileges (useradd, "
              "systemctl, nmcli) are printed, not run.")


def root_option(fn):
    """``--root DIR`` (``$SILBATO_ROOT``), given to the command as ``root``."""
    return click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
                        envvar="SILBATO_ROOT", show_default=True, help=_ROOT_HELP)(fn)


def _layout(root: Path):
    from node.appliance.host import Layout, host_for

    layout = Layout(root)
    return layout, host_for(layout)


def needs_root(fn):
    """Refuse the command on this machine (``--root /``) unless it runs as root; put it below ``root_option``."""
    @functools.wraps(fn)
    def checked(*args, root: Path, **kwargs):
        _, host = _layout(root)
        if host.real and os.geteuid() != 0:
            raise click.ClickException(f"run '{_command_words()}' as root (sudo), or give --root DIR")
        return fn(*args, root=root, **kwargs)
    return checked


def _command_words() -> str:
    """``silbato wifi apply``, whatever name the program was started by (``python -m node.cli``, a test)."""
    words, ctx = [], click.get_current_context()
    while ctx.parent is not None:
        words.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["silbato", *reversed(words)])


def _root_config_path(ctx: click.Context, layout) -> Path | None:
    """``--config`` if given; else the layout's settings file (None: the default, for root /)."""
    if ctx.obj.get("config_path"):
        return Path(ctx.obj["config_path"])
    return None if layout.is_system else layout.config_file


def _root_config(ctx: click.Context, layout) -> config_mod.Config:
    return config_mod.load(_root_config_path(ctx, layout))


def _wheel_for(source: str | None, workdir: Path) -> Path:
    from node.appliance import release

    if source is None:
        checkout = release.share_dir()
        if not (checkout / "pyproject.toml").is_file():
            raise click.ClickException("give --from: a wheel file, a source directory or a git URL")
        source = str(checkout)
    try:  # here, not in the group: ``update`` reports a release it cannot build as an error, not an outcome
        return release.build_wheel(source, workdir, say=click.echo)
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None


def _workdir(ctx: click.Context) -> Path:
    """A temporary folder for building the wheel, removed when the command ends."""
    from node.appliance.release import temporary_dir

    workdir = temporary_dir()
    ctx.call_on_close(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return workdir


@click.command()
@root_option
@needs_root
@click.option("--from", "source", default=None, metavar="SOURCE",
              help="The release: a wheel file, a source directory or a git URL. Default: this checkout.")
@click.pass_context
def install(ctx: click.Context, root: Path, source: str | None) -> None:
    """Make this machine a node (run as root): user, settings, release, units, key, services. Idempotent."""
    from node.appliance import install as install_mod

    layout, host = _layout(root)
    install_mod.install(layout, host, _wheel_for(source, _workdir(ctx)), say=click.echo)
    click.echo(f"install: done; check it with 'silbato doctor{'' if layout.is_system else f' --root {root}'}'")


@click.command()
@root_option
@needs_root
@click.option("--purge", is_flag=True, help="Also remove the settings, the state directory (node key, alerts) "
                                            "and the silbato user.")
@click.option("--yes", is_flag=True, help="Do not ask before --purge deletes the node key and alerts.")
def uninstall(root: Path, purge: bool, yes: bool) -> None:
    """Stop and remove the services and the releases; keep settings and state unless --purge."""
    from node.appliance import install as install_mod

    layout, host = _layout(root)
    if purge and not yes:
        click.confirm("Delete this node's key, its alerts and its settings for good?", abort=True)
    install_mod.uninstall(layout, host, purge=purge, say=click.echo)


@click.command()
@root_option
@needs_root
@click.option("--from", "source", required=True, metavar="SOURCE",
              help="The new release: a wheel file, a source directory or a git URL.")
@click.option("--json", "as_json", is_flag=True, help="End with the outcome as one line of JSON (for fleet).")
@click.option("--force", is_flag=True, help="Reinstall even if this version is the current one.")
@click.pass_context
def update(ctx: click.Context, root: Path, source: str, as_json: bool, force: bool) -> None:
    """Install a release beside the current one, try it, switch, and roll back if it is not healthy."""
    from node.appliance.update import Outcome, Updater

    layout, host = _layout(root)
    cfg = _root_config(ctx, layout)
    workdir = _workdir(ctx)
    try:
        wheel = _wheel_for(source, workdir)
        outcome = Updater(layout, host, cfg, config_path=_root_config_path(ctx, layout), say=click.echo).run(
            wheel, force=force)
    except (SilbatoError, OSError) as exc:  # a failed update is an outcome to report, not an error
        outcome = Outcome(layout.current_version(), None, "failed", str(exc))
    old, new = outcome.old or "nothing", outcome.new or "?"
    word = {"updated": f"updated {old} -> {new}", "unchanged": f"unchanged at {new}",
            "rolled back": f"rolled back to {old}: {outcome.reason}"}.get(outcome.result, f"failed: {outcome.reason}")
    click.echo(f"update: {word}")
    if as_json:
        click.echo(outcome.json())
    ctx.exit(0 if outcome.ok else 1)


@click.command()
@root_option
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check this database file instead of the node's (update checks a migrated copy).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, root: Path, db_path: Path | None, as_json: bool) -> None:
    """Check settings, key, roster, radio, GPIO, database, clock, disk and services; exit 1 on any FAIL."""
    from dataclasses import asdict

    from node.appliance import doctor as doctor_mod

    layout, host = _layout(root)
    results = doctor_mod.Doctor(host, config_path=_root_config_path(ctx, layout), db=db_path).run()
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results]))
    else:
        for r in results:
            click.echo(r.line())
        click.echo(doctor_mod.summary(results))
    ctx.exit(doctor_mod.exit_code(results))


@click.command()
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (for fleet status).")
@click.pass_context
def status(ctx: click.Context, root: Path, as_json: bool) -> None:
    """A short summary: version, uptime, services, radio, active alerts and troubles."""
    from node.appliance import status as status_mod

    layout, host = _layout(root)
    summary = status_mod.collect(_root_config(ctx, layout), host)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for line in status_mod.lines(summary):
            click.echo(line)


def wifi() -> None:
    """The building's Wi-Fi: the node as a hotspot (ap) or on the building's network (lan)."""


@click.command("apply")
@root_option
@needs_root
@click.pass_context
def wifi_apply(ctx: click.Context, root: Path) -> None:
    """Write the NetworkManager, dnsmasq and avahi files for wifi.mode, and reload them."""
    from node.appliance import wifi as wifi_mod

    layout, host = _layout(root)
    cfg = _root_config(ctx, layout)
    try:
        warnings = wifi_mod.apply(layout, host, cfg, say=click.echo)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in warnings:
        click.echo(f"WARN {warning}")
    click.echo(f"wifi: mode {cfg['wifi.mode']} applied")


@click.option("--ssh-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ssh_config file to use instead of ~/.ssh/config (ssh -F).")
@click.pass_context
def fleet(ctx: click.Context, ssh_config: Path | None) -> None:
    """Look after the block's nodes over SSH from a maintainer's machine."""
    ctx.obj["ssh_config"] = ssh_config


def _ssh(ctx: click.Context):
    from node.appliance.fleet import Ssh

    return Ssh(ctx.obj.get("ssh_config"), say=click.echo)


_BATCH = click.IntRange(1, 50)


@click.command("update")
@click.argument("hosts", nargs=-1, required=True)
@click.option("--from", "source", required=True, metavar="SOURCE",
              help="The release: a wheel file, a source directory or a git URL (built once, here).")
@click.option("--batch", default=3, show_default=True, type=_BATCH,
              help="Nodes updated at once after the canary (the first HOST).")
@click.pass_context
def fleet_update(ctx: click.Context, hosts: tuple[str, ...], source: str, batch: int) -> None:
    """Update HOSTS: the first alone (the canary), then BATCH at a time; stop at the first failure."""
    from node.appliance import fleet as fleet_mod
    from node.appliance.release import wheel_version

    wheel = _wheel_for(source, _workdir(ctx))
    click.echo(f"fleet: release {wheel_version(wheel)}; canary {hosts[0]}, then {batch} at a time")
    results, seconds = fleet_mod.timed(lambda: fleet_mod.update(hosts, wheel, ssh=_ssh(ctx), batch=batch))
    for line in fleet_mod.update_table(results):
        click.echo(line)
    done = sum(r.ok for r in results)
    click.echo(f"fleet: {done} of {len(results)} nodes on {wheel_version(wheel)} in {seconds:.1f} s")
    ctx.exit(0 if done == len(results) else 1)


@click.command("status")
@click.argument("hosts", nargs=-1, required=True)
@click.pass_context
def fleet_status(ctx: click.Context, hosts: tuple[str, ...]) -> None:
    """Each node's version, health and the alerts it holds."""
    from node.appliance import fleet as fleet_mod

    found = fleet_mod.status(hosts, ssh=_ssh(ctx))
    for line in fleet_mod.status_lines(found):
        click.echo(line)
    ctx.exit(0 if all(summary is not None for _, summary, _ in found) else 1)


@click.command("roster")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("hosts", nargs=-1, required=True)
@click.option("--batch", default=3, show_default=True, type=_BATCH,
              help="Nodes done at once after the canary (the first HOST).")
@click.pass_context
def fleet_roster(ctx: click.Context, file: Path, hosts: tuple[str, ...], batch: int) -> None:
    """Install the signed roster FILE on HOSTS (canary first) and restart their daemons."""
    from node.appliance import fleet as fleet_mod

    results = fleet_mod.roster(hosts, file, ssh=_ssh(ctx), batch=batch)
    rows = [(r.host, r.new or "-", f"{r.result}: {r.reason}" if r.reason else r.result) for r in results]
    for line in fleet_mod.table(rows, ("HOST", "ROSTER", "RESULT")):
        click.echo(line)
    ctx.exit(0 if all(r.ok for r in results) else 1)


def add_to(group: click.Group) -> None:
    """Add these commands to ``group``; ``wifi`` and ``fleet`` become its subgroups, of its own class."""
    for command in (install, uninstall, update, doctor, status):
        group.add_command(command)
    group.group()(wifi).add_command(wifi_apply)
    fleet_group = group.group()(fleet)
    for command in (fleet_update, fleet_status, fleet_roster):
        fleet_group.add_command(command)
