"""The evidence locker: neighbors' photos, video and statements, sealed as they stream in.

- ``seal``: a plaintext stream into the age format, to the organizers' recipients (the node
  holds no identity and cannot open what it keeps), with its hashes, caps and typed errors;
- ``manifest``: the hash-chained, signed list of an incident's items, and its signed head
  (pure: bytes and a key in, entries out), shared by the daemon and ``silbato verify``;
- ``verify``: checks an incident bundle with no secret, naming what was changed.
"""
