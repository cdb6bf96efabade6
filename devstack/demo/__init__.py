"""The pieces of `manage.py demo`: child processes, the stack, the traffic, the report."""
