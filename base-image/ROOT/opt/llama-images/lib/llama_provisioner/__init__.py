"""The provisioner: a manifest in the reference image's format (PROVISIONING_MANIFEST,
/provisioning.yaml) run phase by phase, then PROVISIONING_SCRIPT. See cli.py."""
