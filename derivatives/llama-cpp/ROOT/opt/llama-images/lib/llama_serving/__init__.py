"""llama-server in the llama-cpp image: configuration from the environment (config), the models
downloaded before it starts (download; the hub's answers and aria2 read in hub, the caches on the
volume in caches), its output read (output), and the Supervisor program that runs it (service)."""
