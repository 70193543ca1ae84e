"""Project templates for ``mapper new`` (Jinja). ``mapper/`` is the default: a whole runnable mapper project."""
