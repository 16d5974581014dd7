"""Command-line entry points (console scripts). Each turns its config into objects via builders."""
