"""The programs behind the command-line tools: ``tools/<name>.py`` runs ``rein_d2.tools.<name>``'s
``main`` (so tests and scripts import them as modules; the command lines are the tools')."""
