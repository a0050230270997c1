"""The Instance Portal: the declared services with their Supervisor state, start/stop/restart,
log tails and boot/provisioning status; a JSON API under /api and one page that uses it."""
