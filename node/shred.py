"""Destroying files that may be seized: overwrite with random bytes, sync, unlink.

Shared by the node's wipe (node/daemon/wipe.py) and the SMS gateway's (node/gateway/service.py),
which may not import daemon code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


def destroy(paths: Iterable[Path]) -> list[Path]:
    """Overwrite, sync and remove each existing file; returns those destroyed. Never raises."""
    done = []
    for path in paths:
        try:
            size = path.stat().st_size
            with open(path, "r+b", buffering=0) as fh:
                remaining = size
                while remaining > 0:
                    chunk = os.urandom(min(remaining, 1 << 20))
                    fh.write(chunk)
                    remaining -= len(chunk)
                os.fsync(fh.fileno())
            path.unlink()
            done.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("wipe: could not destroy %s: %s", path, exc)
            try:
                path.unlink()
                done.append(path)
            except OSError:
                pass
    return done
