"""Appliance tooling: install, release, update, fleet, doctor, status, Wi-Fi. Never imported by the daemon."""
