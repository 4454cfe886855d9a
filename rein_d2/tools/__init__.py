"""Programs behind command-line tools, importable as modules: ``tools/demo.py`` runs
``rein_d2.tools.demo.main`` (the command line is the tool's; tests and scripts import the module)."""
