"""The task shell: the invoke tasks (tasks.py) and their bodies, which check every option into
one typed value, then call the core and the edges."""
