"""Adapters: the code that talks to the world (GitHub over HTTP, the SQLite store, model weights on
disk, the version registry, settings from the environment, files, logging). The domain in ``bot``
never imports them; they import it, and the use cases (harvest, finetune, webhooks) stand on them."""
