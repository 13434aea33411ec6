"""`bgremove`: the service's background removal from a shell, for files and folders.

The same pipeline (`imaging.pipeline`) and the same model loading (`models.registry`,
`deployments.settings`) as the service, run in-process without Ray, or sent to a running
service with ``--url``. Entry point: `bgremove.cli.main`.
"""
