"""The composition root and the process: settings, wiring, web server, CLI."""
