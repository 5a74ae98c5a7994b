"""The ``silbato`` command: a thin click group over the library. Errors become one clear line.

The appliance's commands (install, uninstall, update, doctor, status, wifi, fleet) live in
``node.appliance.commands``, beside the code they run, and are added to the group at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from node import __version__
from node import config as config_mod
from node.appliance import commands as appliance_commands
from node.catalog import LANGUAGES
from node.errors import SilbatoError


class Group(click.Group):
    """A click group that ends any command raising ``SilbatoError`` with its one line (exit 1)."""

    group_class = type  # its subgroups are Groups too

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SilbatoError as exc:
            raise click.ClickException(str(exc)) from None


def _setup_logging(level: str) -> None:
    from node.service import JournalFormatter, under_journald

    if under_journald():  # one line per event, with its priority; journald adds the time
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
        return
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_config(ctx: click.Context) -> config_mod.Config:
    """The effective settings for this invocation; a bad file is one line naming the file and key."""
    if ctx.obj.get("config") is None:
        ctx.obj["config"] = config_mod.load(ctx.obj["config_path"])
    return ctx.obj["config"]


def open_store(ctx: click.Context):
    """The node's database (``node.store.Store``), closed when the command ends; made, if it must be,
    as the daemon would (``node.statedir``: even as root, the daemon and the page can write it)."""
    from node import statedir

    return ctx.with_resource(statedir.open_store(load_config(ctx)))


def _read_json(path: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.ClickException(f"{path}: not valid JSON: {exc}") from None


@click.group(cls=Group)
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
@click.option("--mock-pins", is_flag=True,
              help="Use gpiozero's mock pins instead of the Pi's GPIO, to try the daemon on a laptop.")
@click.pass_context
def run(ctx: click.Context, mock_pins: bool) -> None:
    """Run the node daemon (button, siren, radio, store) until SIGTERM."""
    from node.daemon import runtime

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    pin_factory = None
    if mock_pins:
        from node.hardware.devices import mock_factory

        pin_factory = mock_factory()
    sys.exit(runtime.run(cfg, pin_factory=pin_factory))


@cli.group(invoke_without_command=True)
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the neighbors' page and the captains' console with the waitress WSGI server.

    The secret that signs captains' cookies is kept in web.state_dir (made at the first start).
    """
    if ctx.invoked_subcommand is not None:
        return
    from web import create_app, security, server, settings

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    app = create_app({**settings(cfg), "SECRET_KEY": security.load_secret(cfg.web_secret_file)})
    server.serve(app, cfg["web.host"], cfg["web.port"], live_clients=cfg["web.live_clients"])


@web.command("rotate-secret")
@click.pass_context
def web_rotate_secret(ctx: click.Context) -> None:
    """Replace the page's secret: every captain logs in again and every device cookie ends."""
    from web import security

    path = load_config(ctx).web_secret_file
    security.rotate_secret(path)
    click.echo(f"new secret written to {path}; restart the page to use it (sudo systemctl restart silbato-web): "
               "every captain then logs in again")


# -- config ------------------------------------------------------------------------------

@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings (defaults, file, SILBATO_* environment, then the roster's block-wide ones)."""
    from node.protocol.keys import load_roster

    cfg = load_config(ctx)
    try:
        cfg = config_mod.with_roster(cfg, load_roster(cfg))
    except SilbatoError:
        pass  # no roster yet, or one the node cannot use ('silbato doctor' says why): this node's own
    click.echo(config_mod.render(cfg), nl=False)


# -- keys --------------------------------------------------------------------------------

@cli.group()
def keys() -> None:
    """This node's Ed25519 identity."""


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace an existing key (the node must be re-rostered).")
@click.pass_context
def keys_init(ctx: click.Context, force: bool) -> None:
    """Create this node's key (mode 0600) and print its public key for the roster.

    A node that has a key already (``silbato install`` makes one) keeps it: its public key
    is printed, and nothing is changed.
    """
    from node.protocol.keys import SigningKey

    cfg = load_config(ctx)
    if cfg.key_file.exists() and not force:
        key = SigningKey.load(cfg.key_file)
        click.echo(f"this node has a key already ({cfg.key_file}; 'silbato install' makes one): kept")
        click.echo(f"public key: {key.public_b64}")
        click.echo("(--force would replace it, and the organizers would have to put the new one on the roster)")
        return
    key = SigningKey.create(cfg.key_file, force=force)
    click.echo(f"{'replaced' if force else 'created'} {cfg.key_file}")
    click.echo(f"public key: {key.public_b64}")


@keys.command("show")
@click.pass_context
def keys_show(ctx: click.Context) -> None:
    """Print this node's public key."""
    from node.protocol.keys import SigningKey

    click.echo(SigningKey.load(load_config(ctx).key_file).public_b64)


# -- roster ------------------------------------------------------------------------------

@cli.group()
def roster() -> None:
    """The organizers' signed list of the block's nodes."""


@roster.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False))
def roster_keygen(path: str) -> None:
    """Create the organizers' signing key at PATH (0600) and its public key at PATH.pub."""
    from node.protocol.keys import SigningKey

    if Path(path).exists():
        raise click.ClickException(f"{path} exists already: the organizers make their key once and keep it; "
                                   f"sign with it ('silbato roster sign BODY --key {path}'), its public key is {path}.pub")
    key = SigningKey.create(Path(path))
    Path(path + ".pub").write_text(key.public_b64 + "\n")
    click.echo(f"created {path} (keep it off the nodes) and {path}.pub (install on every node)")


@roster.command("sign")
@click.argument("body", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The organizers' private key.")
@click.option("--out", type=click.Path(dir_okay=False), default="-", help="Where to write the signed roster.")
def roster_sign(body: str, key_path: str, out: str) -> None:
    """Sign BODY, a JSON file {"block", "version", "nodes": [...], "settings": {...}}, with the organizers' key.

    "settings" holds the block-wide settings every node must share (radio.preset, supervision.period...);
    an unknown one, or a value out of its range, is refused by name.
    """
    from node.protocol.keys import load_organizer_key, sign_roster

    data = _read_json(body)
    organizer = load_organizer_key(Path(key_path))  # before the body: a public key is the likelier slip
    try:
        document = sign_roster(data, organizer)
        carried = config_mod.block_settings(data.get("settings"))  # the values, which the protocol cannot judge
    except SilbatoError as exc:
        raise click.ClickException(f"{body}: {exc}") from None
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    note = (f"block-wide settings: {', '.join(f'{k} = {v}' for k, v in carried.items())}" if carried else
            "note: this roster carries no block-wide settings, so each node uses its own "
            f"({', '.join(config_mod.BLOCK_SETTINGS)}): add a \"settings\" object to set them for the block")
    if out == "-":
        click.echo(text, nl=False)
        click.echo(note, err=True)
    else:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"signed roster v{data['version']} written to {out}; {note}")


@roster.command("install")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def roster_install(ctx: click.Context, file: str) -> None:
    """Verify FILE against the organizers' key and install it.

    Refuses a roster with a bad signature, of another block, older than the installed one,
    or on which this node's key is missing or revoked.
    """
    from node.protocol.keys import SigningKey, install_roster, load_public

    cfg = load_config(ctx)
    document = _read_json(file)
    if not cfg.key_file.exists():
        raise click.ClickException(f"{cfg.key_file}: this node has no key yet: run 'silbato keys init' and give "
                                   "its public key to the organizers for the roster")
    me = SigningKey.load(cfg.key_file)
    try:
        result = install_roster(document, load_public(Path(cfg["node.organizer_key"])), cfg.roster_file,
                                node_key=me.public_raw, check=lambda r: config_mod.with_roster(cfg, r))
    except SilbatoError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    name = result.find_key(me.public_raw).name
    click.echo(f"installed roster v{result.version} of block {result.block!r} "
               f"({len(result.members)} nodes) at {cfg.roster_file}; this node is {name}")


@roster.command("show")
@click.pass_context
def roster_show(ctx: click.Context) -> None:
    """Print the installed roster after checking its signature."""
    from node.protocol.keys import load_roster

    cfg = load_config(ctx)
    r = load_roster(cfg)
    click.echo(f"block {r.block!r}, version {r.version}")
    for m in r.members.values():
        click.echo(f"  {m.id:5d} {m.name:8s} location {m.location:5d} {m.place}{'  REVOKED' if m.revoked else ''}")
    effective = config_mod.with_roster(cfg, r)  # RosterError, naming the key, for a bad value
    for name, value in effective.block.carried.items():
        click.echo(f"  setting {name} = {value}")
    click.echo(config_mod.describe_block(effective))


# -- neighborhood ---------------------------------------------------------------------------

@cli.group()
def neighborhood() -> None:
    """The neighborhood roster: the member blocks, signed by the neighborhood's organizers."""


def _body(path: str) -> dict:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("blocks"), list):
        raise click.ClickException(f"{path}: not a neighborhood roster body ('silbato neighborhood init' makes one)")
    return data


def _write_body(path: str, body: dict) -> None:
    Path(path).write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@neighborhood.command("init")
@click.argument("name")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="Where to create the neighborhood organizers' signing key (its public key: KEY.pub).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The new, empty roster body (JSON).")
def neighborhood_init(name: str, key_path: str, out: str) -> None:
    """Create the neighborhood organizers' key and an empty roster body for neighborhood NAME."""
    from node.protocol.keys import SigningKey
    from node.protocol.neighborhood import check_name

    check_name(name, "neighborhood name")
    if Path(out).exists():
        raise click.ClickException(f"{out} exists already; it was not replaced")
    key = SigningKey.create(Path(key_path))  # KeyFileError if it exists: the organizers make it once
    Path(key_path + ".pub").write_text(key.public_b64 + "\n")
    _write_body(out, {"name": name, "version": 1, "blocks": []})
    click.echo(f"created {key_path} (keep it off the nodes), {key_path}.pub (install on every node as "
               f"neighborhood.organizer_key) and {out}: add blocks ('silbato neighborhood add-block'), then sign it")


@neighborhood.command("add-block")
@click.argument("body", type=click.Path(exists=True, dir_okay=False))
@click.argument("name")
@click.option("--organizer-key", "organizer", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The public key that signs that block's roster (its organizer.pub).")
@click.option("--area", default="", help='A short public description, such as "Elm St 100-200".')
@click.option("--neighbor", "neighbors", multiple=True, help="A neighboring block already listed (repeatable).")
def neighborhood_add_block(body: str, name: str, organizer: str, area: str, neighbors: tuple[str, ...]) -> None:
    """Add block NAME (or replace its entry) in BODY, and raise BODY's version."""
    from node.protocol.keys import load_public
    from node.protocol.neighborhood import _parse_body, block_entry, check_name

    data = _body(body)
    check_name(name, "block name")
    entry = block_entry(name, load_public(Path(organizer)), area, neighbors)
    data["blocks"] = [b for b in data["blocks"] if not (isinstance(b, dict) and b.get("name") == name)] + [entry]
    data["version"] = int(data.get("version", 0)) + 1
    try:
        _parse_body(data)
    except SilbatoError as exc:
        raise click.ClickException(f"{body}: {exc}") from None
    _write_body(body, data)
    click.echo(f"{body}: block {name!r} added (version {data['version']}); sign it to publish it")


@neighborhood.command("revoke-block")
@click.argument("body", type=click.Path(exists=True, dir_okay=False))
@click.argument("name")
def neighborhood_revoke_block(body: str, name: str) -> None:
    """Mark block NAME revoked in BODY (its alerts no longer cross), and raise BODY's version."""
    data = _body(body)
    found = [b for b in data["blocks"] if isinstance(b, dict) and b.get("name") == name]
    if not found:
        raise click.ClickException(f"{body}: no block {name!r}")
    found[0]["revoked"] = True
    data["version"] = int(data.get("version", 0)) + 1
    _write_body(body, data)
    click.echo(f"{body}: block {name!r} revoked (version {data['version']}); sign it to publish it")


@neighborhood.command("sign")
@click.argument("body", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The neighborhood organizers' private key.")
@click.option("--out", type=click.Path(dir_okay=False), default="-", help="Where to write the signed roster.")
def neighborhood_sign(body: str, key_path: str, out: str) -> None:
    """Sign BODY, a JSON file {"name", "version", "blocks": [...], "policy": {...}}, with the organizers' key."""
    from node.protocol.keys import load_organizer_key
    from node.protocol.neighborhood import sign_neighborhood

    data = _read_json(body)
    organizer = load_organizer_key(Path(key_path))
    try:
        document = sign_neighborhood(data, organizer)
    except SilbatoError as exc:
        raise click.ClickException(f"{body}: {exc}") from None
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if out == "-":
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"signed neighborhood roster v{data['version']} ({len(data['blocks'])} blocks) written to {out}")


@neighborhood.command("install")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def neighborhood_install(ctx: click.Context, file: str) -> None:
    """Verify FILE against neighborhood.organizer_key and install it (the daemon reads it at start).

    Refuses a bad signature, another neighborhood than neighborhood.name, or an older version.
    """
    from node.protocol.keys import load_public
    from node.protocol.neighborhood import install_neighborhood, roster_path

    cfg = load_config(ctx)
    try:
        result = install_neighborhood(_read_json(file), load_public(Path(cfg["neighborhood.organizer_key"])),
                                      roster_path(cfg), name=cfg["neighborhood.name"])
    except SilbatoError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(f"installed neighborhood roster v{result.version} of {result.name!r} ({len(result.blocks)} blocks) "
               f"at {roster_path(cfg)}")


@neighborhood.command("show")
@click.pass_context
def neighborhood_show(ctx: click.Context) -> None:
    """Print the installed neighborhood roster after checking its signature."""
    from node.protocol.neighborhood import load_installed, policy_from_settings

    cfg = load_config(ctx)
    r = load_installed(cfg)
    click.echo(f"neighborhood {r.name!r}, version {r.version}")
    for b in r.blocks.values():
        click.echo(f"  {b.name:16s} {b.code:08x} {b.area}  neighbors: {', '.join(sorted(b.neighbors)) or '-'}"
                   f"{'  REVOKED' if b.revoked else ''}")
    policy = r.policy or policy_from_settings(cfg)
    click.echo(f"crossing: {', '.join(s.word for s in sorted(policy.states))} to {policy.to} "
               f"({'the roster' if r.policy else 'this node'}'s policy)")


# -- wipe -------------------------------------------------------------------------------

@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask; for scripts and for when the door is being forced.")
@click.pass_context
def wipe(ctx: click.Context, yes: bool) -> None:
    """Destroy this node's key, database and captains' accounts (in 10 s or less)."""
    import time

    from node.daemon import wipe as wipe_mod
    from node.shred import destroy

    cfg = load_config(ctx)
    if not yes:
        click.confirm("Destroy this node's key, its database and its captains' accounts?", abort=True)
    started = time.monotonic()
    key = cfg.key_file
    if key.exists():
        try:  # a running daemon tells the block in its last heartbeat, then wipes itself
            wipe_mod.ask(cfg)
        except OSError as exc:
            click.echo(f"could not ask the node daemon ({exc.strerror}: {exc.filename}); "
                       "wiping the files directly", err=True)
        deadline = started + wipe_mod.WIPE_WITHIN / 2
        while key.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    destroyed = destroy(wipe_mod.node_files(cfg))  # whatever is left, daemon or not
    spool_files = _destroy_sms_spool(cfg)
    click.echo(f"wiped in {time.monotonic() - started:.1f} s"
               + (f": {', '.join(str(p) for p in destroyed)}" if destroyed else ""))
    if spool_files:
        click.echo(f"and {spool_files} files in gammu-smsd's spool ({cfg['sms.spool']})")
    click.echo("Ask the organizers to revoke this node's key in the roster.")


def _destroy_sms_spool(cfg) -> int:
    """The SMS spool's files (numbers in their names): the daemon cannot reach them, root can; a
    running gateway also destroys them once it sees the database gone. How many were destroyed here."""
    from node.gateway.spool import Spool

    try:
        return Spool(cfg["sms.spool"]).destroy_all()
    except OSError as exc:
        click.echo(f"could not reach gammu-smsd's spool ({exc.strerror}: {exc.filename}); a running "
                   "SMS gateway destroys it when it sees the node wiped", err=True)
        return 0


# -- radio ------------------------------------------------------------------------------

@cli.group()
def radio() -> None:
    """The Meshtastic radio: inspect it, give it the block's settings."""


@radio.command("info")
@click.pass_context
def radio_info(ctx: click.Context) -> None:
    """Print the radio's firmware, node number, region, preset, channel and health."""
    from node.radio.interface import probe

    info, troubles = probe(load_config(ctx))
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

    from node.radio.interface import describe, opened
    from node.radio.provision import configure, load_channel_key

    cfg = load_config(ctx)
    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(settings, dict):
        raise click.ClickException(f"{path}: expected a mapping at the top level")
    key = load_channel_key(cfg["radio.channel_key_file"])
    with opened(cfg) as iface:
        for line in configure(iface, settings, key=key, channel=cfg["radio.channel"], source=path):
            click.echo(line)
        _, troubles = describe(iface, cfg["radio.channel"])
    for sentence in troubles.values():
        click.echo(f"TROUBLE: {sentence}")


@radio.command("keygen")
@click.pass_context
def radio_keygen(ctx: click.Context) -> None:
    """Create the block's channel key file (32 random bytes, base64, mode 0600) if it is absent."""
    from node.protocol.keys import b64, write_secret

    path = Path(load_config(ctx)["radio.channel_key_file"])
    if path.exists():
        raise click.ClickException(f"{path}: a channel key exists; every node of the block must share one key")
    write_secret(path, b64(os.urandom(32)))
    click.echo(f"created {path}; copy it to every node of the block, then run 'silbato radio configure'")


# -- store -------------------------------------------------------------------------------

@cli.command()
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Delete ended alerts older than alerts.retention now, and truncate the WAL."""
    import time

    cfg = load_config(ctx)
    retention = cfg["alerts.retention"]
    if not cfg.db_file.exists():  # never make one: the daemon does, with its owner and mode, when it first starts
        click.echo(f"nothing to purge: no database at {cfg.db_file} (the node daemon makes it when it first starts)")
        return
    removed = open_store(ctx).purge(time.time(), retention)
    click.echo(f"purged {removed} alerts older than {retention:.0f} s")


@cli.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The database file (default: the node's).")
@click.pass_context
def migrate(ctx: click.Context, db_path: Path | None) -> None:
    """Apply the database migrations of this release (the daemon also does this when it starts)."""
    from node.store import Store, migrations

    path = db_path or load_config(ctx).db_file
    if not path.exists():
        raise click.ClickException(f"{path}: no such database")
    with Store(path, readonly=True) as store:
        pending = [m.name for m in migrations.pending(store.db)]
    Store(path).close()  # opening it for writing applies them
    click.echo(f"applied {len(pending)} migrations: {', '.join(pending)}" if pending else "no migrations pending")


# -- captains ----------------------------------------------------------------------------

@cli.group()
def captain() -> None:
    """Captains' accounts for the console on this node's page (run as the node's user)."""


@captain.command("add")
@click.argument("name")
@click.option("--replace", is_flag=True, help="Give an existing captain a new password (ends their sessions).")
@click.pass_context
def captain_add(ctx: click.Context, name: str, replace: bool) -> None:
    """Create captain NAME (a handle, not a real name); asks for a password of 8 or more characters."""
    import time

    from web.auth import MIN_PASSWORD, hash_password, valid_name

    if not valid_name(name):
        raise click.ClickException(f"{name!r}: a name is 1-32 letters, digits, '.', '_' or '-'")
    store = open_store(ctx)
    if store.captain(name) is not None and not replace:
        raise click.ClickException(f"captain {name!r} exists; add --replace to set a new password")
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        hashed = hash_password(password)
    except ValueError:
        raise click.ClickException(f"a password needs at least {MIN_PASSWORD} characters") from None
    store.add_captain(name, hashed, time.time(), replace=replace)
    click.echo(f"captain {name!r} {'has a new password' if replace else 'added'}")


@captain.command("remove")
@click.argument("name")
@click.pass_context
def captain_remove(ctx: click.Context, name: str) -> None:
    """Remove captain NAME and end their sessions at once."""
    if not open_store(ctx).remove_captain(name):
        raise click.ClickException(f"no captain {name!r}")
    click.echo(f"captain {name!r} removed")


@captain.command("list")
@click.pass_context
def captain_list(ctx: click.Context) -> None:
    """List this node's captains."""
    for row in open_store(ctx).captains():
        click.echo(row["name"])


# -- hardware ----------------------------------------------------------------------------

@cli.group("hardware")
def hardware_group() -> None:
    """The button, siren, status light and speaker."""


def _this_place(cfg: config_mod.Config) -> dict[int, str]:
    """This node's location and place name from its key and roster, for the spoken test; a sample without them."""
    from node.protocol.keys import load_identity

    try:
        me = load_identity(cfg, revoked_ok=True).me
    except (SilbatoError, OSError):
        return {1: "Building 1"}
    return {me.location: me.place}


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
    from node.hardware import check as hardware
    from node.hardware.devices import mock_factory

    cfg = load_config(ctx)
    factory = press = None
    if mock:
        factory = mock_factory()
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
              help="Where the nodes keep their keys and databases, kept at exit "
                   "(default: a new temporary folder, removed at exit).")
@click.option("--radio", default="air", show_default=True, type=click.Choice(["air", "serial"]),
              help="air: nodes on the simulated air directly; serial: through the real meshtastic library "
                   "to simulated radios on pseudo-terminals.")
@click.option("--blocks", type=click.IntRange(1, 50), default=None,
              help="A neighborhood: this many blocks of N nodes, sharing alerts through a Mosquitto broker "
                   "started on a free loopback port (needs Debian's mosquitto); node 1 of each is its bridge.")
@click.option("--sms", is_flag=True,
              help="Node 1 is also the SMS gateway: the real gammu-smsd on Gammu's dummy phone (needs gammu-smsd), "
                   "with POST /sms/in and GET /sms/out on the control endpoint.")
def sim(n: int, topology: str, port_base: int, loss: float, preset: str, seed: int, scale: float,
        state_dir: str | None, radio: str, blocks: int | None, sms: bool) -> None:
    """Run a simulated block of N nodes (or --blocks B of them), each node with its web page, on localhost."""
    from node.sim import run_demo, run_neighborhood

    _setup_logging("INFO")
    root = Path(state_dir) if state_dir else None  # None: a temporary folder, removed at exit
    if blocks is not None:
        if radio != "air":
            raise click.BadParameter("a neighborhood runs on the simulated air only", param_hint="--radio")
        try:
            run_neighborhood(root, blocks, n, topology, port_base=port_base, loss=loss, preset=preset, seed=seed,
                             scale=scale, say=click.echo)
        except OSError as exc:
            raise click.ClickException(str(exc)) from None
        return
    try:
        run_demo(root, n, topology, port_base=port_base, loss=loss, preset=preset, seed=seed, scale=scale,
                 radio=radio, say=click.echo, sms=sms)
    except OSError as exc:  # e.g. --dir not writable (a port in use is a ListenError, one line too)
        raise click.ClickException(str(exc)) from None


# -- evidence: proving an incident bundle ----------------------------------------------

@cli.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--organizer", "organizer_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own copy of the organizers' public key (default: the one inside the bundle).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify_bundle(bundle: str, organizer_path: str | None, as_json: bool) -> None:
    """Check an incident bundle with no secret: frames, the evidence chain, every sealed item's hash."""
    from node.evidence.verify import verify
    from node.protocol.keys import load_public

    report = verify(Path(bundle), load_public(Path(organizer_path)) if organizer_path else None)
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "frames": report.frames, "entries": report.entries,
                               "items": report.items, "notes": report.notes,
                               "findings": [vars(f) for f in report.findings]}, indent=1))
    else:
        for finding in report.findings:
            click.echo(f"FAIL {finding}")
        for note in report.notes:
            click.echo(f"note: {note}")
        click.echo(f"{'FAILED' if report.findings else 'OK'}: {report.frames} signed frames, "
                   f"{report.entries} manifest entries, {report.items} sealed files checked"
                   + (f"; {len(report.findings)} problem(s)" if report.findings else ""))
    if not report.ok:
        raise SystemExit(1)


@cli.group()
def evidence() -> None:
    """Neighbors' sealed evidence: open a bundle, pull it off the nodes, release it on a node."""


@evidence.command("open")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--identity", "identity_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The organizers' age identity file (as age-keygen writes it).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder to write the items to.")
@click.option("--keep-metadata", is_flag=True,
              help="Keep location tags in photos and videos (default: removed with exiftool).")
@click.option("--organizer", "organizer_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own copy of the organizers' public key (default: the one inside the bundle).")
def evidence_open(bundle: str, identity_path: str, out: str, keep_metadata: bool, organizer_path: str | None) -> None:
    """Verify BUNDLE, then decrypt its items into OUT (location removed from photos and videos)."""
    from node.evidence.unseal import load_identities, unseal
    from node.protocol.keys import load_public

    identities = load_identities(Path(identity_path))
    result = unseal(Path(bundle), identities, Path(out), keep_metadata=keep_metadata,
                    organizer=load_public(Path(organizer_path)) if organizer_path else None)
    if not result.report.ok:
        for finding in result.report.findings:
            click.echo(f"FAIL {finding}")
        raise click.ClickException(f"{bundle} does not verify ({len(result.report.findings)} problem(s)); "
                                   "nothing was decrypted")
    for opened in result.opened:
        where = "location removed" if opened.location_removed else "as sent"
        click.echo(f"{opened.file}  {opened.content_type}  ({where})")
    for problem in result.problems:
        click.echo(f"FAIL {problem}")
    click.echo(f"{'OK' if result.ok else 'FAILED'}: {len(result.opened)} item(s) opened into {out}"
               + (f"; {len(result.problems)} not" if result.problems else ""))
    if not result.ok:
        raise SystemExit(1)


@evidence.command("pull")
@click.argument("hosts", nargs=-1, required=True)
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder on this machine for the bundles (one folder per host).")
@click.option("--ssh-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ssh_config file to use instead of ~/.ssh/config (ssh -F).")
@click.option("--organizer", "organizer_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own copy of the organizers' public key (default: the one inside each bundle).")
def evidence_pull(hosts: tuple[str, ...], to: Path, ssh_config: Path | None, organizer_path: str | None) -> None:
    """Copy each node's sealed evidence here, verify it here, then have the node delete what verified."""
    from node.appliance.fleet import Ssh
    from node.evidence import pull as pull_mod
    from node.protocol.keys import load_public

    organizer = load_public(Path(organizer_path)) if organizer_path else None
    results = pull_mod.pull(hosts, to, ssh=Ssh(ssh_config, say=click.echo), organizer=organizer)
    for line in pull_mod.lines(results):
        click.echo(line)
    if not results:
        click.echo("nothing held on those nodes")
    click.echo(f"evidence pull: {sum(r.verified for r in results)} item(s) verified, "
               f"{sum(r.released for r in results)} released"
               + (f"; {sum(not r.ok for r in results)} problem(s)" if not all(r.ok for r in results) else ""))
    if not all(r.ok for r in results):
        raise SystemExit(1)


@evidence.command("held")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON (for evidence pull).")
@click.pass_context
def evidence_held(ctx: click.Context, as_json: bool) -> None:
    """On a node: the incidents with sealed evidence still kept here."""
    from node.evidence.pull import held

    found = held(open_store(ctx))
    if as_json:
        click.echo(json.dumps({"incidents": found}))
        return
    for incident in found:
        click.echo(f"{incident['id']}: {incident['items']} item(s), {incident['bytes']} bytes sealed")
    if not found:
        click.echo("no evidence held")


@evidence.command("bundle")
@click.argument("incident")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Where to write the zip ('-': standard output).")
@click.pass_context
def evidence_bundle(ctx: click.Context, incident: str, out: str) -> None:
    """On a node: write INCIDENT's bundle (the page's export), sealed items included."""
    from web.export import stream_bundle

    cfg = load_config(ctx)
    found = stream_bundle(open_store(ctx), incident, evidence_dir=cfg.evidence_dir)
    if found is None:
        raise click.ClickException(f"no incident {incident} on this node")
    with click.open_file(out, "wb") as fh:
        for chunk in found[1]:
            fh.write(chunk)


@evidence.command("release")
@click.argument("incident")
@click.argument("items", nargs=-1, required=True)
@click.pass_context
def evidence_release(ctx: click.Context, incident: str, items: tuple[str, ...]) -> None:
    """On a node: delete ITEMS of INCIDENT that an organizer pulled, if their sealed files are the ones signed."""
    import time as time_mod

    from node.evidence.pull import release

    cfg = load_config(ctx)
    outcome = release(open_store(ctx), cfg.evidence_dir, incident, items, time_mod.time())
    for item, word in outcome.items():
        click.echo(f"{item}: {word}")
    click.echo(json.dumps({"items": outcome}))
    if any(word.startswith("kept") for word in outcome.values()):
        raise SystemExit(1)


# -- the SMS gateway ------------------------------------------------------------------------

PASSPHRASE_ENV = "SILBATO_SMS_PASSPHRASE"


@cli.command()
@click.pass_context
def gateway(ctx: click.Context) -> None:
    """Run the SMS gateway (texts through gammu-smsd's files backend) until SIGTERM; it starts locked."""
    import signal
    import threading

    from node.gateway.service import Gateway
    from node.gateway.spool import Spool
    from node.store import GATEWAY_TABLES, Store

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    stopping = threading.Event()

    def on_signal(signum, _frame):
        logging.getLogger("node.gateway").info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store = ctx.with_resource(Store(cfg.db_file, writes=GATEWAY_TABLES))
    spool = Spool(cfg["sms.spool"]).make()
    Gateway(store, spool, max_age=cfg["sms.max_age"], smsd_pid=cfg["sms.smsd_pid"]).run(stopping, cfg["sms.socket"])


# -- the neighborhood bridge -------------------------------------------------------------------

@cli.command()
@click.pass_context
def bridge(ctx: click.Context) -> None:
    """Run the neighborhood bridge (this block's link to the MQTT broker) until SIGTERM."""
    import signal
    import threading

    from node.bridge.service import Bridge
    from node.bridge.settings import link_settings
    from node.store import BRIDGE_TABLES, Store

    cfg = load_config(ctx)
    _setup_logging(cfg["log.level"])
    stopping = threading.Event()

    def on_signal(signum, _frame):
        logging.getLogger("node.bridge").info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store = ctx.with_resource(Store(cfg.db_file, writes=BRIDGE_TABLES))
    try:
        link = link_settings(cfg, store)
    except SilbatoError as exc:
        logging.getLogger("node.bridge").error("%s", exc)
        raise
    Bridge(store, link, retention=cfg["alerts.retention"]).run(stopping)


@cli.group()
def sms() -> None:
    """The SMS gateway's lists and state (numbers are encrypted: most commands ask for the passphrase)."""


def _sms_vault(ctx: click.Context, passphrase: str):
    from node.gateway.book import Book

    store = open_store(ctx)
    return Book(store), Book(store).unlock(passphrase)


def _number(raw: str) -> str:
    from node.gateway.service import normalise_number

    try:
        return normalise_number(raw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NUMBER") from None


_passphrase = click.option("--passphrase", envvar=PASSPHRASE_ENV, prompt=True, hide_input=True,
                           help=f"The SMS lists' passphrase (or {PASSPHRASE_ENV}; asked if neither).")


@sms.command("unlock")
@click.option("--passphrase", envvar=PASSPHRASE_ENV, prompt=True, hide_input=True,
              help=f"The SMS lists' passphrase (or {PASSPHRASE_ENV}; asked if neither). The first one sets it.")
@click.pass_context
def sms_unlock(ctx: click.Context, passphrase: str) -> None:
    """Hand the running gateway the passphrase, so it can read the lists and send texts."""
    from node.gateway.service import send_unlock

    path = load_config(ctx)["sms.socket"]
    try:
        answer = send_unlock(path, passphrase)
    except OSError as exc:
        raise click.ClickException(f"cannot reach the gateway at {path}: {exc.strerror or exc} "
                                   "(is silbato-gateway running?)") from None
    if answer != "ok":
        raise click.ClickException(answer or "the gateway did not answer")
    click.echo("SMS gateway unlocked.")


@sms.command("status")
@click.pass_context
def sms_status(ctx: click.Context) -> None:
    """The gateway's state (locked or running), its lists' sizes and its queue (no numbers)."""
    from node.gateway.book import Book

    book = Book(open_store(ctx))
    click.echo(f"state: {book.state('state') or 'not started'}")
    trouble = book.state("trouble")
    if trouble:
        click.echo(f"trouble: SMS gateway: {trouble}")
    counts = book.counts()
    click.echo("lists: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("responder", "broad", "pending")))
    queue = book.queue_counts()
    click.echo("texts: " + ", ".join(f"{name} {queue.get(name, 0)}"
                                     for name in ("queued", "handed", "sent", "failed", "dropped")))
    click.echo(f"tips: {len(book.tips())}")
    locked = book.pin_locked_handles()
    if locked:
        click.echo("PIN locked (wrong PINs; 'silbato sms responders unlock-pin NUMBER'): " + ", ".join(locked))


@sms.command("test")
@click.argument("number")
@_passphrase
@click.option("--language", type=click.Choice(LANGUAGES), default="en", show_default=True)
@click.pass_context
def sms_test(ctx: click.Context, number: str, passphrase: str, language: str) -> None:
    """Queue a test text to NUMBER (the running, unlocked gateway sends it)."""
    import time as time_mod

    from node.gateway import texts

    book, vault = _sms_vault(ctx, passphrase)
    number = _number(number)
    now = time_mod.time()
    book.enqueue(f"test:{vault.mac(number)}:{now}", number_enc=vault.seal(number), number_mac=vault.mac(number),
                 priority="C", text=texts.reply_text("test", language), now=now)
    click.echo(f"Test text queued for {vault.pseudonym(number)}.")


SMS_WIPE_WAIT = 5.0   # seconds the CLI gives a running gateway to wipe (and forget its key) before wiping itself


@sms.command("wipe")
@click.option("--yes", is_flag=True, help="Do not ask; for scripts and for when the door is being forced.")
@click.pass_context
def sms_wipe(ctx: click.Context, yes: bool) -> None:
    """Destroy the SMS lists, their key, the queue, tips and every file in gammu-smsd's spool."""
    import threading
    import time as time_mod

    from node.gateway.book import Book
    from node.gateway.spool import Spool

    cfg = load_config(ctx)
    if not yes:
        click.confirm("Destroy the SMS gateway's lists and their key, its queue, tips and replies, and every "
                      "file in gammu-smsd's spool?", abort=True)
    started = time_mod.monotonic()
    store = open_store(ctx)
    book = Book(store)
    with store.transaction():   # a running gateway wipes at its next step, and forgets the key it holds
        asked = store.db.execute("INSERT INTO sms_wipes (captain, created_at) VALUES ('silbato sms wipe', ?)",
                                 [time_mod.time()]).lastrowid
    waiting = threading.Event()
    while time_mod.monotonic() - started < SMS_WIPE_WAIT and asked in book.wipes_asked():
        waiting.wait(0.1)
    answered = asked not in book.wipes_asked()
    book.wipe()                 # whatever is left, gateway or not
    try:
        files = Spool(cfg["sms.spool"]).destroy_all()
    except OSError as exc:
        raise click.ClickException(f"the lists are wiped, but the spool could not be: {exc.strerror}: "
                                   f"{exc.filename} (run as root)") from None
    book.wipe_done([asked], time_mod.time())
    emptied = store.truncate_wal()
    click.echo(f"SMS lists wiped in {time_mod.monotonic() - started:.1f} s"
               + (" by the running gateway" if answered else " (no running gateway answered)")
               + ": lists, key, queue, tips and gammu-smsd's spool destroyed"
               + (f" ({files} spool files here)." if files else "."))
    if not emptied:
        click.echo("warning: a reader kept the database's write-ahead log; the next purge empties it", err=True)
    click.echo("The next 'silbato sms unlock' sets a new passphrase; add the responders again.")


@sms.group("responders")
def sms_responders() -> None:
    """The responders' list: each with a personal PIN for texted commands."""


@sms_responders.command("add")
@click.argument("number")
@click.option("--pin", required=True, help="The responder's personal PIN, 6 to 8 digits.")
@click.option("--language", type=click.Choice(LANGUAGES), default="en", show_default=True)
@_passphrase
@click.pass_context
def sms_responders_add(ctx: click.Context, number: str, pin: str, language: str, passphrase: str) -> None:
    """Add NUMBER to the responders (or give a responder a new PIN or language)."""
    import time as time_mod

    from node.gateway.book import check_pin

    try:
        check_pin(pin)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pin") from None
    book, vault = _sms_vault(ctx, passphrase)
    row = book.add(vault, _number(number), "responder", language, time_mod.time(), pin=pin)
    click.echo(f"Responder {row['handle']} added ({vault.pseudonym(_number(number))}).")


@sms_responders.command("remove")
@click.argument("number")
@_passphrase
@click.pass_context
def sms_responders_remove(ctx: click.Context, number: str, passphrase: str) -> None:
    """Take NUMBER off every list at once (texts not yet handed to the modem are dropped)."""
    book, vault = _sms_vault(ctx, passphrase)
    number = _number(number)
    if book.subscriber(vault, number) is None:
        raise click.ClickException(f"{vault.pseudonym(number)} is on no list")
    book.remove(vault, number)
    click.echo(f"{vault.pseudonym(number)} removed.")


@sms_responders.command("unlock-pin")
@click.argument("number")
@_passphrase
@click.pass_context
def sms_responders_unlock_pin(ctx: click.Context, number: str, passphrase: str) -> None:
    """Let NUMBER's texted commands work again after its PIN was locked by wrong PINs."""
    from node.gateway.book import RESPONDER

    book, vault = _sms_vault(ctx, passphrase)
    number = _number(number)
    row = book.subscriber(vault, number)
    if row is None or row["list"] != RESPONDER:
        raise click.ClickException(f"{vault.pseudonym(number)} is not a responder")
    was = row["pin_failures"] or 0
    book.pin_reset(row["id"])
    click.echo(f"Responder {row['handle']}: PIN unlocked ({was} wrong PINs in a row forgotten). "
               "If they did not send those, consider a new PIN: 'silbato sms responders add'.")


# -- the appliance: install, update, doctor, status, Wi-Fi, fleet ------------------------

appliance_commands.add_to(cli)


if __name__ == "__main__":
    main()
