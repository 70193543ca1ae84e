"""The ``mapper`` command line. It sits on top of everything; nothing imports it."""
