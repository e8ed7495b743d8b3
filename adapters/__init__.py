"""Adapters: the code that talks to the world (GitHub over HTTP, the SQLite store, model weights on
disk, the version registry, logging). The domain in ``bot`` never imports them; they import it."""
