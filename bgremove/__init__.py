"""`bgremove`: the service's background removal from a shell, for files and folders.

The same pipeline (`imaging.pipeline`) and the same model loading and settings
(`models.registry`, `models.settings`) as the service, run in-process without Ray, or sent to
a running service with ``--url``. Nothing here imports the service (`deployments`, Ray
Serve): tests/cli/test_layers.py checks it. Entry point: `bgremove.cli.main`.
"""
