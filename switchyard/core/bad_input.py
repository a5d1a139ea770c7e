"""Input that cannot be used: a name nothing has, a value out of range, a service where it is not.

Nothing was touched when one is raised. Its own module, without imports, because every layer
raises it (core's configuration, the blocks, the command line) and the command line answers all
of them the same way: one line and exit code 2.
"""


class BadInput(ValueError):
    """A name or value the operation cannot use; nothing was touched. The message says which."""
