"""The block protocol: pure code, time passed in; no I/O, no threads, no hardware."""
