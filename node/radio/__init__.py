"""The radio: the Meshtastic link, provisioning, the simulated air and radio (the only importer of meshtastic and pyserial)."""
