"""The node daemon: wiring, its collaborators, and the runtime (signals, sd_notify, watchdog)."""
