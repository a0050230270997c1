"""The pure core: the matrix, targets, bake files, releases, plans and reports as values and
functions. No process, network, file or environment access: the edges and the task shell do that,
and tests/pipeline/test_architecture.py checks the imports of every module in this folder."""
