"""llama-server in the llama-cpp image: configuration from the environment (config), its output
read (output), and the Supervisor program that runs it (service)."""
