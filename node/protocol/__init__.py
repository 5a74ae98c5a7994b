"""The block protocol as pure code: the time passed in, no threads, no radio or pins. Only ``keys`` reads files (key files and the roster)."""
