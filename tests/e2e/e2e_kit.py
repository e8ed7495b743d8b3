"""Constants shared by the end-to-end tests (imported by name; pytest puts this folder on sys.path)."""

TOKEN = "e2e-sample-token"  # the only token the sample simulator accepts; it acts as the bot
BOT = "revbot[bot]"
REPO = "acme/stockroom"
