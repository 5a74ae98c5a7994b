"""The neighbors' page: a Flask app that reads the node's store and never writes it.

``web`` never imports ``node.radio``, ``node.hardware`` or ``node.daemon``: the page
process holds no signing key and no device.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Settings: a mapping, else ``SILBATO_WEB_DATABASE`` from the environment.

    ``DATABASE`` is the node's SQLite file (opened read-only per request);
    ``NODE_NAME`` is shown in the page title.
    """
    app = Flask(__name__)
    app.config.from_mapping(DATABASE=os.environ.get("SILBATO_WEB_DATABASE", ""), NODE_NAME="Silbato")
    if test_config is not None:
        app.config.from_mapping(test_config)
    from web import api, data, public

    app.teardown_appcontext(data.close_store)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    return app
