"""Development tools: the GitHub simulator, tiny random models and the offline demo. Production
modules never import this package; the ``revbot dev`` and ``revbot demo`` commands reach it through
the shell's command table (``revbot.cli.COMMANDS``), by module name."""
