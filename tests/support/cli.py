"""What the CLI tests share (tests/cli/conftest.py's fixtures and tests/cli/test_cli.py)."""

from __future__ import annotations

#: small real photos (the CLI's cost is the model's; these keep the suite fast): the folder
#: of the `photos` fixture holds them, a photo in a sub-folder, a corrupt JPEG and a text file
PHOTOS = ("hockey.png", "horse.jpg", "im_14.png", "whisk.png")
