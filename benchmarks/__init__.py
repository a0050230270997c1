"""`nox -s bench`: issue 8's benchmarks of the CPU image (update pull size, matrix build time,
boot to healthy, proxy overhead under load, image size), each against a baseline measured in
the same run. Pure parts: stats, load (hey's command and output), layers, report; the I/O is in
measure (what the measurements share: engine, builds, containers), the measurements themselves
(builds, serving, portal, download) and __main__ (options, output files).

Not shipped with the package (it lives beside it, like the tests): nothing in llama_images imports it.
"""
