"""Test stages a new color goes through before users see it, each a small client of its own.

Unlike switchyard.core they do I/O (HTTP against the gateway's test listener); unlike the tasks
they know nothing of Prefect, so they are tested against a real local server.
"""
