"""The neighborhood bridge (``silbato bridge``): this block's link to the neighborhood's MQTT broker.

Like the page and the SMS gateway, it is a door to the outside with its own user: it publishes
what the daemon queued in ``bridge_out`` and queues in ``bridge_in`` every message the broker
hands it (``node.bridgequeue``), and writes nothing else (``node.store.BRIDGE_TABLES``). It
imports no radio, hardware or daemon code, holds no key, and verifies and signs nothing: the
daemon alone judges what comes in.

- ``settings``: the ``bridge.*`` settings, checked (the broker, TLS, credentials, client id);
- ``service``: the loop that connects, publishes, acknowledges and records the link's state.
"""
