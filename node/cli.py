"""The ``silbato`` command: a thin click group over the library. Errors become one clear line."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import click

from node import __version__
from node import config as config_mod
from node.errors import SilbatoError


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_config(ctx: click.Context) -> config_mod.Config:
    """The effective settings for this invocation; a bad file is one line naming the file and key."""
    if ctx.obj.get("config") is None:
        try:
            ctx.obj["config"] = config_mod.load(ctx.obj["config_path"])
        except SilbatoError as exc:
            raise click.ClickException(str(exc)) from None
    return ctx.obj["config"]


@click.group()
@click.version_option(__version__, prog_name="silbato")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help=f"Settings file (TOML). Default: {config_mod.DEFAULT_CONFIG_PATH} if it exists.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Silbato: a block's own raid-alert network over LoRa."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def main() -> None:
    cli(obj={})


# -- run and web --------------------------------------------------------------------------

@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the node daemon (button, siren, radio, store) until SIGTERM."""
    from node import daemon

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    try:
        sys.exit(daemon.run(cfg))
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the neighbors' page with the waitress WSGI server."""
    import waitress

    from web import create_app

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    app = create_app({"DATABASE": str(cfg.db_file)})
    waitress.serve(app, host=cfg["web.host"], port=cfg["web.port"], threads=4)


# -- config ------------------------------------------------------------------------------

@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (defaults, file, then SILBATO_* environment)."""
    click.echo(config_mod.render(load_config(ctx)), nl=False)


# -- keys --------------------------------------------------------------------------------

@cli.group()
def keys() -> None:
    """This node's Ed25519 identity."""


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace an existing key (the node must be re-rostered).")
@click.pass_context
def keys_init(ctx: click.Context, force: bool) -> None:
    """Create this node's key (mode 0600) and print its public key for the roster."""
    from node.keys import SigningKey

    cfg = load_config(ctx)
    try:
        key = SigningKey.create(cfg.key_file, force=force)
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {cfg.key_file}")
    click.echo(f"public key: {key.public_b64}")


@keys.command("show")
@click.pass_context
def keys_show(ctx: click.Context) -> None:
    """Print this node's public key."""
    from node.keys import SigningKey

    cfg = load_config(ctx)
    try:
        click.echo(SigningKey.load(cfg.key_file).public_b64)
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None


# -- roster ------------------------------------------------------------------------------

@cli.group()
def roster() -> None:
    """The organizers' signed list of the block's nodes."""


@roster.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False))
def roster_keygen(path: str) -> None:
    """Create the organizers' signing key at PATH (0600) and its public key at PATH.pub."""
    from node.keys import SigningKey

    try:
        key = SigningKey.create(Path(path))
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    Path(path + ".pub").write_text(key.public_b64 + "\n")
    click.echo(f"created {path} (keep it off the nodes) and {path}.pub (install on every node)")


@roster.command("sign")
@click.argument("body", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The organizers' private key.")
@click.option("--out", type=click.Path(dir_okay=False), default="-", help="Where to write the signed roster.")
def roster_sign(body: str, key_path: str, out: str) -> None:
    """Sign BODY, a JSON file {"block", "version", "nodes": [...]}, with the organizers' key."""
    from node.keys import SigningKey, sign_roster

    try:
        data = json.loads(Path(body).read_text(encoding="utf-8"))
        document = sign_roster(data, SigningKey.load(Path(key_path)))
    except ValueError as exc:
        raise click.ClickException(f"{body}: not valid JSON: {exc}") from None
    except SilbatoError as exc:
        raise click.ClickException(f"{body}: {exc}") from None
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if out == "-":
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"signed roster v{data['version']} written to {out}")


@roster.command("install")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def roster_install(ctx: click.Context, file: str) -> None:
    """Verify FILE against the organizers' key and install it, refusing an older version."""
    from node.keys import install_roster, load_public

    cfg = load_config(ctx)
    try:
        document = json.loads(Path(file).read_text(encoding="utf-8"))
        result = install_roster(document, load_public(Path(cfg["node.organizer_key"])), cfg.roster_file)
    except ValueError as exc:
        if isinstance(exc, SilbatoError):
            raise click.ClickException(f"{file}: {exc}") from None
        raise click.ClickException(f"{file}: not valid JSON: {exc}") from None
    except SilbatoError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(f"installed roster v{result.version} of block {result.block!r} "
               f"({len(result.members)} nodes) at {cfg.roster_file}")


@roster.command("show")
@click.pass_context
def roster_show(ctx: click.Context) -> None:
    """Print the installed roster after checking its signature."""
    from node.keys import Roster, load_public

    cfg = load_config(ctx)
    try:
        r = Roster.load(cfg.roster_file, load_public(Path(cfg["node.organizer_key"])))
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"block {r.block!r}, version {r.version}")
    for m in r.members.values():
        click.echo(f"  {m.id:5d} {m.name:8s} location {m.location:5d} {m.place}{'  REVOKED' if m.revoked else ''}")


# -- radio ------------------------------------------------------------------------------

@cli.group()
def radio() -> None:
    """The Meshtastic radio: inspect it, give it the block's settings."""


def _open_radio(cfg: config_mod.Config):
    from node.radio import open_interface

    if not (cfg["radio.port"] or cfg["radio.tcp"]):
        raise click.ClickException("no radio configured: set radio.port (or radio.tcp)")
    try:
        return open_interface(port=cfg["radio.port"], tcp=cfg["radio.tcp"])
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None


@radio.command("info")
@click.pass_context
def radio_info(ctx: click.Context) -> None:
    """Print the radio's firmware, node number, region, preset, channel and health."""
    from node.radio import close_interface, describe

    cfg = load_config(ctx)
    iface = _open_radio(cfg)
    try:
        info, troubles = describe(iface, cfg["radio.channel"])
    finally:
        close_interface(iface)
    for key, value in info.items():
        click.echo(f"{key:12s} {value}")
    click.echo(f"{'health':12s} {'ok' if not troubles else 'TROUBLE'}")
    for sentence in troubles.values():
        click.echo(f"  TROUBLE: {sentence}")


@radio.command("configure")
@click.option("--file", "path", type=click.Path(dir_okay=False), default="/etc/silbato/meshtastic.yaml",
              show_default=True, help="Settings in the 'meshtastic --configure' YAML format "
                                      "(the repo's firmware_config/meshtastic.yaml).")
@click.pass_context
def radio_configure(ctx: click.Context, path: str) -> None:
    """Apply the block's radio settings and its private channel key to the radio."""
    import yaml

    from node.radio import close_interface, configure, describe, load_channel_key

    cfg = load_config(ctx)
    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(settings, dict):
        raise click.ClickException(f"{path}: expected a mapping at the top level")
    try:
        key = load_channel_key(cfg["radio.channel_key_file"])
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    iface = _open_radio(cfg)
    try:
        for line in configure(iface, settings, key=key, channel=cfg["radio.channel"], source=path):
            click.echo(line)
        _, troubles = describe(iface, cfg["radio.channel"])
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        close_interface(iface)
    for sentence in troubles.values():
        click.echo(f"TROUBLE: {sentence}")


@radio.command("keygen")
@click.pass_context
def radio_keygen(ctx: click.Context) -> None:
    """Create the block's channel key file (32 random bytes, base64, mode 0600) if it is absent."""
    import base64
    import os

    cfg = load_config(ctx)
    path = Path(cfg["radio.channel_key_file"])
    if path.exists():
        raise click.ClickException(f"{path}: a channel key exists; every node of the block must share one key")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot write: {exc.strerror}") from None
    click.echo(f"created {path}; copy it to every node of the block, then run 'silbato radio configure'")


# -- store -------------------------------------------------------------------------------

@cli.command()
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Delete ended alerts older than alerts.retention now, and truncate the WAL."""
    import time

    from node.store import Store

    cfg = load_config(ctx)
    try:
        store = Store(cfg.db_file)
        removed = store.purge(time.time(), cfg["alerts.retention"])
        store.close()
    except SilbatoError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"purged {removed} alerts older than {cfg['alerts.retention']:.0f} s")


# -- hardware ----------------------------------------------------------------------------

@cli.group("hardware")
def hardware_group() -> None:
    """The button, siren, status light and speaker."""


def _this_place(cfg: config_mod.Config) -> dict[int, str]:
    """This node's location and place name from its key and roster, for the spoken test; a sample without them."""
    from node.keys import Roster, SigningKey, load_public

    try:
        roster = Roster.load(cfg.roster_file, load_public(Path(cfg["node.organizer_key"])))
        me = roster.find_key(SigningKey.load(cfg.key_file).public_raw)
    except (SilbatoError, OSError):
        me = None
    return {me.location: me.place} if me is not None else {1: "Building 1"}


@hardware_group.command("test")
@click.option("--mock", is_flag=True, help="Use gpiozero mock pins and a scripted press and hold (no Pi needed).")
@click.option("--yes", is_flag=True, help="Do not ask whether each light and sound was seen or heard.")
@click.option("--wait", default=30.0, show_default=True, type=click.FloatRange(0.1, 600.0),
              help="Seconds to wait for each button press.")
@click.option("--step", default=1.0, show_default=True, type=click.FloatRange(0.0, 10.0),
              help="Seconds each light mode and siren pattern is shown at most.")
@click.pass_context
def hardware_test(ctx: click.Context, mock: bool, yes: bool, wait: float, step: float) -> None:
    """Check the light, each siren pattern, the buttons and the speaker; one PASS or FAIL line per step.

    Stop silbato-node first: the test needs its GPIO pins. Exits 1 if any step failed.
    """
    from node import hardware

    cfg = load_config(ctx)
    factory = press = None
    if mock:
        factory = hardware.mock_factory()
        press = hardware.scripted_hold(factory, cfg["hardware.hold_time"] * 1.5)
    ask = None if yes or mock else (lambda question: click.confirm(question, default=True))
    ok = hardware.check(cfg, say=click.echo, ask=ask, pin_factory=factory, press=press, wait=wait, step=step,
                        places=_this_place(cfg))
    ctx.exit(0 if ok else 1)


# -- the simulated block -----------------------------------------------------------------

@cli.command()
@click.option("--nodes", "n", default=5, show_default=True, type=click.IntRange(1, 200), help="How many nodes.")
@click.option("--topology", default="line", show_default=True, type=click.Choice(["line", "grid", "random"]))
@click.option("--port-base", default=8000, show_default=True, type=click.IntRange(1024, 65000),
              help="Control endpoint on this port, node i's page on port-base + i.")
@click.option("--loss", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.95),
              help="Probability that a link drops a packet.")
@click.option("--preset", default="MEDIUM_FAST", show_default=True,
              type=click.Choice(["SHORT_FAST", "MEDIUM_FAST", "LONG_FAST", "SHORT_TURBO", "SHORT_SLOW",
                                 "MEDIUM_SLOW", "LONG_MODERATE", "LONG_SLOW"]), help="Meshtastic modem preset.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed for loss and delays.")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.1, 1000.0),
              help="Simulated seconds per wall-clock second.")
@click.option("--dir", "state_dir", type=click.Path(file_okay=False), default=None,
              help="Where the nodes keep their keys and databases (default: a new temporary folder).")
@click.option("--radio", default="air", show_default=True, type=click.Choice(["air", "serial"]),
              help="air: nodes on the simulated air directly; serial: through the real meshtastic library "
                   "to simulated radios on pseudo-terminals.")
def sim(n: int, topology: str, port_base: int, loss: float, preset: str, seed: int, scale: float,
        state_dir: str | None, radio: str) -> None:
    """Run a simulated block of N nodes, each with its web page, on localhost."""
    from node.sim import run_demo

    _setup_logging("INFO")
    root = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="silbato-sim-"))
    try:
        run_demo(root, n, topology, port_base=port_base, loss=loss, preset=preset, seed=seed, scale=scale,
                 radio=radio)
    except (SilbatoError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
