"""The I/O edges: the Docker engine and buildx, registries, the GitHub API, HTTP, git, files and
GitHub Actions. Each wraps one outside thing in typed values and errors the core understands."""
