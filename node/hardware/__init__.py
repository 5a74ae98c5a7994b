"""The building's hardware: panic button, siren, status light, speech, ``silbato hardware test`` (the only importer of gpiozero)."""
