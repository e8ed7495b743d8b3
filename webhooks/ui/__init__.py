"""The operator's pages under /ui/ (docs/ui.md): registered by ``webhooks.app.create_app`` only when
a token is configured (REVBOT_UI_TOKEN or REVBOT_UI_TOKEN_FILE); without one they do not exist."""

from __future__ import annotations

from typing import Any

from flask import Flask


def register_ui(app: Flask, service: Any) -> bool:
    """Add the pages to ``app`` when the service's settings hold a token; False (nothing added) otherwise."""
    token = service.config.settings.ui_token_text()
    if not token:
        return False
    from webhooks.ui import security, views

    security.configure(app, token)
    app.extensions[views.EXTENSION] = views.UiContext(service, token)
    app.register_blueprint(views.bp)
    return True
