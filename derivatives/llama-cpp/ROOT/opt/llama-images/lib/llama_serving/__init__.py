"""llama-server in the llama-cpp image: configuration from the environment, the models downloaded
before it starts, the Supervisor program that runs it and watches it, its part of the portal.

Modules, each importing only those listed after it (no circles):
  portal_part         its part of the Instance Portal (services.d/llama.toml): routes, panel, secrets
  portal_usage        the portal's "Use it" snippets (pure)
  portal_figures      the model panel's figures from llama-server's own HTTP API
  service             the Supervisor program `llama` (boot, serve, fetch): starts, retries, gives up
  watch               one start of llama-server: its output, health and status lines, how it ended
  fetch               `llama-serving fetch`: the provisioner's downloads through the same downloader
  download            the download phase: hub repos and URLs into the cache with aria2, checked
  caches              models already on the volume: our cache, other caches linked in
  download_types      what the download phase's modules share: Settings, Ui, Prepared, DownloadError
  child               one child process (aria2, llama-server): started, output copied, stall, end
  hub                 the Hugging Face hub's answers, which files `org/repo[:quant]` means, cache layouts
  aria2               aria2's input, arguments, control file and progress (pure)
  config              the environment -> a Plan: llama-server's command line, the models, the retries
  threads             --threads for the CPU budget the container has
  gpu                 the GPU's facts and the CUDA failures read against them
  cuda_architectures  the GPU architectures a CUDA build carries code for, and which GPUs can run it
  output              llama-server's output read: progress bars, request lines, failure causes
  status              the launcher's status: a typed record it writes, the portal and the worker read
  paths               the launcher's paths (paths.sh generated from it)
"""
